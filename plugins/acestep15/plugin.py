"""The ACE-Step 1.5 plugin (registered under the ``audiotrain.plugins`` entry point as ``acestep15``): LoRA on the
DiT's decoder, trained with the model's own objective, on songs read in ACE-Step 1.5's forms (and v1's).

Data: one stream ``main`` at 48 kHz stereo, up to ``dataset.max_duration`` (240 s, as ACE-Step 1.5 truncates).
Frozen encoders, cached once (``encoders.py``): the VAE posterior (mean and std; a latent is drawn every step) and
the condition features (Qwen3 prompt and lyric features on the inference template, and the condition encoder's
outputs). The backbone (``backbone.py``) trains the decoder on them; ``collate.py`` pads songs of different lengths.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from audiotrain.plugins.base import Plugin
from audiotrain_acestep15.generation import AceStep15Generation

CONF = Path(__file__).resolve().parent / "conf"
TEXT_FIELDS = ("caption", "lyrics", "language", "bpm", "keyscale", "timesignature")
TIMESTEPS = {"logit_normal": "logit_normal", "turbo": "turbo_schedule"}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class AceStep15Plugin(AceStep15Generation, Plugin):
    name = "acestep15"
    sample_rate = 48000
    channels = 2
    released_presets = {"turbo": "acestep15_dit", "base": "acestep15_dit", "sft": "acestep15_dit",
                        "xl-base": "acestep15_xl_dit", "xl-sft": "acestep15_xl_dit", "xl-turbo": "acestep15_xl_dit"}
    #: audiotrain's PEFT folder holds the DiT's own module names (``decoder.layers.N.self_attn.q_proj`` ...);
    #: ACE-Step 1.5 applies PEFT to ``model.decoder``, so its layouts - ``adapter/`` (LoRA) or
    #: ``lokr_weights.safetensors`` (LoKr), and the ComfyUI file - are written beside it at every save by
    #: ``save_adapter_native`` (``adapter_format.py``: a folder, which the core's one-file ``NativeFormat`` does
    #: not describe, so ``native_adapter_format`` stays None); ``lora.init_from`` reads them back
    #: (``read_adapter_native``)
    peft_is_native = True

    def save_adapter_native(self, root, settings, directory):
        from audiotrain_acestep15.adapter_format import save_native

        return save_native(root, settings, directory)

    def read_adapter_native(self, path, root):
        from audiotrain.lora.adapter import adapter_state
        from audiotrain_acestep15.adapter_format import adapted_modules, load_native, native_layout

        found = native_layout(path)
        return None if found is None else load_native(found, adapted_modules(adapter_state(root)))

    def commands(self):
        from audiotrain_acestep15.preprocess import preprocess

        return {"acestep15-preprocess": preprocess}

    def config_options(self):
        return {("model", "acestep15"): CONF / "model" / "acestep15.yaml"}

    def example_data(self, directory, count: int = 4):
        from audiotrain_acestep15.example_data import write_song_folder

        return write_song_folder(Path(directory), count)

    def readers(self):
        from audiotrain_acestep15.readers import acestep15_readers

        return acestep15_readers()

    def build_encoders(self, cfg):
        from audiotrain_acestep15.encoders import build_encoders

        return build_encoders(cfg)

    def build_backbone(self, cfg, *, device: str = "cpu"):
        from audiotrain_acestep15 import encoders
        from audiotrain_acestep15.backbone import AceStep15Backbone

        m = cfg.model
        model = encoders.build_dit(cfg, device=device)
        extra: dict[str, Any] = {}
        if device != "meta":
            vae = lambda: encoders.make_vae(cfg)  # noqa: E731
            extra = {"silence": encoders.silence_latent(cfg, vae), "vae_factory": vae}
        return AceStep15Backbone(model, self.settings(cfg), lora_attention=str(m.get("lora_attention", "both")),
                                 lora_mlp=bool(m.get("lora_mlp", False)), **extra)

    @staticmethod
    def settings(cfg):
        """The backbone's :class:`~audiotrain_acestep15.backbone.Settings` from ``model`` and ``dataset``."""
        from audiotrain_acestep15.backbone import Settings
        from audiotrain_acestep15.objective import ObjectiveConfig

        m, o, s = cfg.model, cfg.model.objective, cfg.model.sampling
        crop = cfg.dataset.get("crop_seconds")
        return Settings(
            objective=ObjectiveConfig(timesteps=TIMESTEPS[str(o.timesteps)], cfg_dropout=float(o.cfg_dropout),
                                      mask_encoder_padding=bool(o.mask_encoder_padding)),
            variant=str(m.preset), crop_frames=None if crop is None else max(1, round(float(crop) * 25)),
            sampler=str(s.sampler), turbo_steps=int(s.turbo_steps), turbo_shift=float(s.turbo_shift),
            guided_steps=int(s.steps), guidance=float(s.guidance), guided_shift=float(s.shift),
            guidance_mode=str(s.guidance_mode))

    def collate(self, items: Sequence[Mapping[str, Any]]):
        from audiotrain_acestep15.collate import collate

        return collate(items)

    def prepare_example(self, row, rng):
        """The text fields the prompts read (the duration is the decoded audio's, given with the stream)."""
        return {"key": row["key"], **{k: row.get(k) for k in TEXT_FIELDS}}

    def describe_example(self, row):
        metas = ", ".join(f"{k} {row[k]}" for k in ("bpm", "keyscale", "timesignature", "language") if row.get(k))
        return (f"CAPTION: {row.get('caption', '')}\n\n" + (f"METAS: {metas}\n\n" if metas else "")
                + f"LYRICS:\n\n{row.get('lyrics') or '[Instrumental]'}")

    def validate(self, cfg) -> list[str]:
        from audiotrain.errors import UserError
        from audiotrain.models.presets import preset_problems
        from audiotrain_acestep15.backbone import ATTENTION, SAMPLERS
        from audiotrain_acestep15.dit_config import PRESETS
        from audiotrain_acestep15.sampling import GUIDANCE_MODES

        m = cfg.model
        problems = preset_problems(m.get("preset"), PRESETS)
        o, s = m.objective, m.sampling
        if str(o.get("timesteps")) not in TIMESTEPS:
            problems.append(f"model.objective.timesteps={o.get('timesteps')} is unknown: use logit_normal (the "
                            f"model's own, every variant) or turbo (the eight turbo times, turbo models only).")
        p = o.get("cfg_dropout")
        if not _number(p) or not 0 <= p <= 1:
            problems.append(f"model.objective.cfg_dropout={p} must be a probability in [0, 1] (0.15 as trained).")
        if not isinstance(o.get("mask_encoder_padding"), bool):
            problems.append(f"model.objective.mask_encoder_padding={o.get('mask_encoder_padding')} must be true or "
                            f"false.")
        if str(s.get("sampler")) not in SAMPLERS:
            problems.append(f"model.sampling.sampler={s.get('sampler')} is unknown: use {', '.join(SAMPLERS)}.")
        if str(s.get("guidance_mode")) not in GUIDANCE_MODES:
            problems.append(f"model.sampling.guidance_mode={s.get('guidance_mode')} is unknown: use "
                            f"{' or '.join(GUIDANCE_MODES)}.")
        for key in ("turbo_steps", "steps"):
            if not _whole(s.get(key)):
                problems.append(f"model.sampling.{key}={s.get(key)} must be a whole number of steps (at least 1).")
        for key in ("turbo_shift", "shift", "guidance"):
            if not _number(s.get(key)) or s.get(key) <= 0:
                problems.append(f"model.sampling.{key}={s.get(key)} must be a positive number.")
        if str(m.get("lora_attention")) not in ATTENTION:
            problems.append(f"model.lora_attention={m.get('lora_attention')} is unknown: use "
                            f"{', '.join(ATTENTION)}.")
        crop = cfg.dataset.get("crop_seconds")
        if crop is not None and (not _number(crop) or crop <= 0):
            problems.append(f"dataset.crop_seconds={crop} must be a positive number of seconds (or null: whole "
                            f"songs).")
        if str(m.get("preset")) in PRESETS and str(m.preset) != "tiny":
            from audiotrain_acestep15.encoders import folders

            try:
                folders(cfg)
            except UserError as exc:
                problems.append(str(exc))
        problems.extend(self._lora_problems(cfg))
        return problems

    def _lora_problems(self, cfg) -> list[str]:
        """LoRA targets outside the decoder would adapt modules whose outputs are cached (never trained)."""
        lora = cfg.lora
        if not lora.get("enabled", True) or not lora.get("target_modules"):
            return []
        import torch

        from audiotrain.lora.adapter import matches
        from audiotrain_acestep15.encoders import dit_config
        from audiotrain_acestep15.dit import AceStepConditionGenerationModel

        try:
            with torch.device("meta"):
                names = [n for n, _ in AceStepConditionGenerationModel(dit_config(cfg)).named_modules()]
        except Exception:  # a bad preset or folder is reported by its own check
            return []
        outside = [str(t) for t in lora.target_modules
                   if any(matches(n, str(t)) and not n.startswith("decoder.") for n in names)]
        if not outside:
            return []
        return [f"lora.target_modules has {', '.join(outside)}, which also name{'s' if len(outside) == 1 else ''} "
                f"condition-encoder / FSQ modules whose outputs are cached (LoRA there never trains): name decoder "
                f"modules (e.g. cross_attn.q_proj, decoder.layers.0.self_attn.q_proj), or leave target_modules null "
                f"and choose with model.lora_attention=self|cross|both and model.lora_mlp=true."]


PLUGIN = AceStep15Plugin()
