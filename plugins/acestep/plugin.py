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

        # Deterministic per song (seeded by its key) so cached and on-the-fly features are identical.
        prompt = prompt_from_tags(row.get("tags"), row.get("recaption"), random.Random(str(row["key"])))
        return {"key": row["key"], "prompt": prompt, "lyrics": row.get("lyrics", ""),
                "speaker_emb_path": row.get("speaker_emb_path", "")}

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


PLUGIN = ACEStepPlugin()

