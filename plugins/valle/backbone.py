"""VALL-E as an audiotrain Backbone: the AR+NAR model, its loss/acc, and speech samples."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from audiotrain.models.backbone import Backbone
from audiotrain.models.lazy import Lazy

from audiotrain_valle.ar_nar import ARNAR, LORA_TARGETS


class VALLEBackbone(Backbone):
    default_lora_targets = LORA_TARGETS

    def __init__(self, model: ARNAR, settings: Mapping[str, Any], codec_factory: Callable[[], Any] | None = None):
        super().__init__()
        self.model = model
        model.ar_loss = str(settings.get("ar_loss", "sequence"))  # model.ar_loss: sequence | segment
        self.max_ar_steps = int(settings.get("eval_max_ar_steps", 500))  # the most AR frames of a sample
        self.ar_temperature = float(settings.get("eval_ar_temperature", 0.95))
        self.nar_temperature = float(settings.get("eval_nar_temperature", 0.25))
        self._codec = Lazy(codec_factory, "a codec")

    def adapter_root(self) -> torch.nn.Module:
        return self.model

    def enable_gradient_checkpointing(self) -> None:
        self.model.model.gradient_checkpointing = True

    def training_losses(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return self.model(phns=batch["phns"], proms=batch["proms"], resps=batch["resps"], langs=batch["langs"],
                          generator=generator)

    def codec(self):
        return self._codec.get()

    @torch.no_grad()
    def generate_codes(self, conditions: Mapping[str, Any], *, seed: int, max_ar_steps: int | None = None,
                       use_cache: bool = True) -> list[torch.Tensor]:
        """AR level 0 (KV-cached unless ``use_cache=False``), then the NAR levels, for every sample's text and prompt."""
        out = []
        for i, (phns, prom) in enumerate(zip(conditions["phns"], conditions["proms"])):
            gen = torch.Generator(device=phns.device).manual_seed(int(seed) + i)
            out.append(self.model.generate(phns, prom, lang=int(conditions["langs"][i]),
                                           max_ar_steps=int(max_ar_steps or self.max_ar_steps),
                                           ar_temperature=self.ar_temperature, nar_temperature=self.nar_temperature,
                                           generator=gen, use_cache=use_cache))
        return out

    def _decode(self, codes: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
        codec = self.codec()
        wavs = [codec.decode(c.cpu()) for c in codes]
        n = max(w.shape[-1] for w in wavs)
        batch = torch.zeros(len(wavs), 1, n)
        for i, w in enumerate(wavs):
            batch[i, 0, : w.shape[-1]] = w
        return batch, codec.sample_rate

    @torch.no_grad()
    def sample_audio(self, conditions: Mapping[str, Any], *, seed: int) -> tuple[torch.Tensor, int]:
        """Speech for the fixed prompts, at most ``model.eval_max_ar_steps`` AR frames (level 0) each."""
        return self._decode(self.generate_codes(conditions, seed=seed))

    @torch.no_grad()
    def reference_audio(self, conditions: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        return self._decode(list(conditions["resps"]))
