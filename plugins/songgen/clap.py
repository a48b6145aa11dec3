"""``eval/clap``: the caption–audio similarity SongGen's trainer reports (spec songgen.md §4, "Eval"), from a
local CLAP folder (``model.clap_path``: transformers' ``ClapModel`` + ``ClapProcessor``, e.g.
laion/larger_clap_music_and_speech saved with ``save_pretrained``; read as data, no remote code).

Per generated song: its caption through the text tower, the audio (mono, 16 kHz → 48 kHz with soxr, as the
original resamples) through the audio tower, the cosine of the two projected embeddings. A song longer than
the processor's window is cropped by the processor's own random truncation — with numpy's RNG seeded, so the
score of the same audio is the same. Rows without a caption (a preprocessed dataset keeps T5 ids only) are not
scored. The model is loaded on first use and kept.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

CLAP_RATE = 48000
EXPECTED = ("a local CLAP folder saved by transformers (config.json of a ClapModel, model.safetensors and the "
            "ClapProcessor files, e.g. laion/larger_clap_music_and_speech)")


class ClapScore:
    name = "clap"

    def __init__(self, path: str | Path, trust_pickle: bool = False):
        self.path, self.trust_pickle = Path(str(path)).expanduser(), bool(trust_pickle)
        self._model = self._processor = None

    def _load(self) -> None:
        from transformers import ClapModel, ClapProcessor

        from audiotrain.hf_folder import load_model
        from audiotrain.safe_files import BadFileError, first_line, where

        self._model = load_model(ClapModel, self.path, option="model.clap_path", expected=EXPECTED,
                                 trust_pickle=self.trust_pickle).eval().requires_grad_(False)
        try:
            self._processor = ClapProcessor.from_pretrained(str(self.path), local_files_only=True,
                                                            trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
            raise BadFileError(f"{where('model.clap_path', self.path)} holds no CLAP processor readable without "
                               f"running code ({first_line(exc)}); pass {EXPECTED}.") from None

    @staticmethod
    def _embedding(out: Any) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.no_grad()
    def score(self, audio: torch.Tensor, sample_rate: int, row: Mapping[str, Any]) -> float | None:
        caption = str(row.get("caption") or "").strip()
        if not caption:
            return None
        if self._model is None:
            self._load()
        import soxr

        wave = torch.as_tensor(audio, dtype=torch.float32).reshape(-1, torch.as_tensor(audio).shape[-1]).mean(0)
        wave = soxr.resample(wave.numpy().astype(np.float64), int(sample_rate), CLAP_RATE).astype(np.float32)
        state = np.random.get_state()
        try:
            np.random.seed(0)  # the processor's random crop of a long song: the same every time
            inputs = dict(self._processor.feature_extractor([wave], sampling_rate=CLAP_RATE, return_tensors="pt"))
        finally:
            np.random.set_state(state)
        # a caption longer than the text tower's positions is cut (RoBERTa keeps two for its offset)
        most = int(self._model.config.text_config.max_position_embeddings) - 2
        ids = self._processor.tokenizer([caption], truncation=True, max_length=most, return_tensors="pt")
        text = self._embedding(self._model.get_text_features(input_ids=ids["input_ids"],
                                                             attention_mask=ids["attention_mask"]))
        audio_kwargs = {"input_features": inputs["input_features"]}
        if "is_longer" in inputs:
            audio_kwargs["is_longer"] = inputs["is_longer"]
        sound = self._embedding(self._model.get_audio_features(**audio_kwargs))
        return float(torch.nn.functional.cosine_similarity(text.float(), sound.float()).item())
