"""The ACE-Step plugin object registered under the ``audiotrain.plugins`` entry point."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from audiotrain.plugins.base import Plugin

CONF = Path(__file__).resolve().parent / "conf"


class ACEStepPlugin(Plugin):
    name = "acestep"
    sample_rate = 48000
    channels = 2

    def config_options(self):
        return {("model", "acestep"): CONF / "model" / "acestep.yaml",
                ("lora", "acestep_zh_rap"): CONF / "lora" / "acestep_zh_rap.yaml",
                ("lora", "acestep_demo"): CONF / "lora" / "acestep_demo.yaml",
                ("experiment", "acestep_demo"): CONF / "experiment" / "acestep_demo.yaml",
                # a staged recipe: stage 2 starts from stage 1's final weights (model.init_from)
                **{("experiment", s): CONF / "experiment" / f"{s}.yaml" for s in ("acestep_stage1", "acestep_stage2")}}

    released_presets = {"v1-3.5b": "acestep_transformer"}

    def example_data(self, directory, count: int = 4):
        from audiotrain_acestep.demo_songs import demo_specs, write_song_folder

        write_song_folder(directory, demo_specs(count, seconds=3.0))
        return Path(directory)

    def readers(self):
        from audiotrain_acestep.readers import HFSongDataset, RawSongFolder

        return [HFSongDataset(), RawSongFolder()]

    def build_encoders(self, cfg):
        from audiotrain_acestep.encoders import build_encoders

        return build_encoders(cfg)

    def build_backbone(self, cfg, *, device: str = "cpu"):
        from audiotrain_acestep.encoders import build_backbone

        return build_backbone(cfg, device=device)

    def collate(self, items: Sequence[Mapping[str, Any]]):
        from audiotrain_acestep.collate import collate

        return collate(items)

    def prepare_example(self, row, rng):
        import random

        from audiotrain_acestep.prompts import prompt_from_tags

        # Deterministic per song (seeded by its key) so cached and on-the-fly features are identical; the text
        # encoder draws the song's other model.prompt_variants from the same tags and recaptions.
        prompt = prompt_from_tags(row.get("tags"), row.get("recaption"), random.Random(str(row["key"])))
        return {"key": row["key"], "prompt": prompt, "lyrics": row.get("lyrics", ""),
                "speaker_emb_path": row.get("speaker_emb_path", ""), "tags": row.get("tags"),
                "recaption": row.get("recaption")}

    def choose_variant(self, features, rng):
        from audiotrain_acestep.prompts import choose

        return choose(features, rng)

    def describe_example(self, row):
        text = self.prepare_example(row, None)
        return f"PROMPT: {text['prompt']}\n\nLYRICS:\n\n{text['lyrics']}"

    def validate(self, cfg) -> list[str]:
        from audiotrain.models.presets import preset_problems
        from audiotrain_acestep.presets import PRESETS

        m = cfg.model
        problems = preset_problems(m.get("preset"), PRESETS)
        shift = m.get("shift")
        if not isinstance(shift, (int, float)) or shift <= 0:
            problems.append(f"model.shift={shift} must be a positive number (ACE-Step uses 3.0).")
        k = m.get("prompt_variants")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 64:
            problems.append(f"model.prompt_variants={k} must be a whole number from 1 to 64 (prompts cached per song; "
                            f"ACE-Step's trainer draws a new one each time, 4 is the default).")
        for key in ("text_dropout", "speaker_dropout", "lyric_dropout"):
            v = m.get(key)
            if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                problems.append(f"model.{key}={v} must be a probability in [0, 1].")
        coeff = m.get("ssl_coeff")
        if not isinstance(coeff, (int, float)) or isinstance(coeff, bool) or coeff < 0:
            problems.append(f"model.ssl_coeff={coeff} must be a non-negative number "
                            "(ACE-Step uses 1.0; 0 turns REPA off).")
        from audiotrain_acestep import ssl_teachers

        paths = ssl_teachers.teacher_paths(cfg)
        if any(paths) and not all(paths):
            problems.append(ssl_teachers.BOTH_NEEDED)
        elif all(paths) and isinstance(coeff, (int, float)) and coeff > 0:
            allow = ssl_teachers.code_allowed(cfg)
            problems.extend(p for p in (ssl_teachers.folder_problem(path, spec, allow)
                                        for path, spec in zip(paths, ssl_teachers.SPECS)) if p)
        if str(m.get("preset")) == "v1-3.5b":
            from audiotrain_acestep import checkpoint

            try:
                checkpoint.locate(m.get("checkpoint_dir"))
            except checkpoint.WeightsNotFound as exc:
                problems.append(str(exc))
        return problems

    def lora_module_names(self, cfg):
        import torch

        with torch.device("meta"):
            backbone = self.build_backbone(cfg, device="meta")
        return backbone.lora_module_names()

    def native_adapter_format(self):
        from audiotrain_acestep.adapter_format import FORMAT

        return FORMAT

    def commands(self):
        from audiotrain_acestep.convert import convert

        return {"convert": convert}

    def save_merged(self, backbone, cfg, directory):
        """The merged transformer in the release layout: ace_step_transformer/{config.json, safetensors}."""
        import json

        from safetensors.torch import save_file

        from audiotrain_acestep.encoders import transformer_config

        folder = directory / "ace_step_transformer"
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in backbone.adapter_root().state_dict().items()}
        save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"_class_name": "ACEStepTransformer2DModel",
                                                       **transformer_config(cfg)}, indent=2))
        return folder

    # ---- audiotrain generate ------------------------------------------------------------------
    generate_text_field = "tags"

    def generate_options(self, parser):
        parser.add_argument("--tags", default="pop, piano, female vocal, 120 bpm",
                            help="the song's tags / prompt, comma-separated (default: %(default)s)")
        parser.add_argument("--lyrics", default="", help="the lyrics ([verse]/[chorus] lines; default: none)")
        parser.add_argument("--duration", type=float, default=30.0, help="seconds of audio, 0.5-240 (default 30)")
        parser.add_argument("--steps", type=int, default=60, help="flow-matching Euler steps (default 60)")
        parser.add_argument("--guidance", type=float, default=15.0,
                            help="classifier-free guidance scale; 1 turns it off (default 15, as ACE-Step)")

    def generate_check(self, cfg, request):
        from audiotrain.errors import UserError

        duration, steps, guidance = request.get("duration"), request.get("steps"), request.get("guidance")
        if not isinstance(duration, (int, float)) or not 0.5 <= float(duration) <= 240:
            raise UserError(f"--duration {duration} is not between 0.5 and 240 seconds: pass e.g. --duration 30.")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise UserError(f"--steps {steps} is not a positive whole number: pass e.g. --steps 60.")
        if not isinstance(guidance, (int, float)) or guidance <= 0:
            raise UserError(f"--guidance {guidance} is not a positive number: pass e.g. --guidance 15 (1 = off).")
        if not isinstance(request.get("tags"), str) or not isinstance(request.get("lyrics") or "", str):
            raise UserError("--tags and --lyrics take text: pass e.g. --tags \"pop, piano\".")

    def generate(self, model, cfg, request, seed, *, progress=None):
        """A song: the tags (UMT5), lyrics (lyric tokenizer) and a zero speaker embedding condition ``steps``
        Euler steps of the flow from seeded noise of ``duration`` seconds of latents, decoded by the DCAE."""
        import math

        import torch

        backbone = model.backbone
        example = {"key": "generate", "prompt": str(request["tags"]), "lyrics": str(request.get("lyrics") or ""),
                   "speaker_emb_path": ""}
        feats: dict = {}
        for enc in model.encoders:
            if enc.name in ("text", "lyrics", "speaker"):
                feats.update(enc.encode(example))
        dec = backbone.decoder()
        samples = round(float(request["duration"]) * dec.source_sample_rate)
        length = max(1, math.ceil(float(request["duration"]) * dec.latent_rate))  # then cut to the exact duration
        height = dec.vocoder.mel_transform.n_mels // dec.time_multiple
        feats["latents"] = torch.zeros(int(dec.dcae_config["latent_channels"]), height, length)
        feats["latent_length"] = torch.tensor([length])
        conditions = self.collate([feats])
        steps, guidance = int(request["steps"]), float(request["guidance"])
        tr = backbone.transformer
        calls = [0]
        per_step = 1 if guidance == 1.0 else 2

        def counted(*args, **kwargs):  # one call per step (two with guidance): the progress bar
            out = type(tr).decode(tr, *args, **kwargs)
            calls[0] += 1
            if progress is not None and calls[0] % per_step == 0:
                progress(calls[0] // per_step, steps)
            return out

        kept = backbone.guidance_scale
        backbone.guidance_scale, tr.decode = guidance, counted
        try:
            latents = backbone.sample_latents(conditions, seed=int(seed), steps=steps)
        finally:
            backbone.guidance_scale = kept
            del tr.decode
        wavs, sr = backbone._decode(latents, conditions["latent_lengths"])
        return wavs[0, :, :samples], int(sr)


PLUGIN = ACEStepPlugin()

