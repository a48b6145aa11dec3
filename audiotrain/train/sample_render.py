"""Training-time audio samples: the fixed prompts (the first examples) rendered by the backbone every
``trainer.every_plot_step`` steps — generated wav + spectrogram png, the example's text, and once the input and
target (codec reconstruction) audio beside them."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig

from audiotrain.data.audio_io import load_audio
from audiotrain.tracking.samples import track_stem, tracks, write_sample


def prompt_text(plugin: Any, row: dict, key: str, seed: int) -> str:
    """The markdown beside a sample: what the example asks for."""
    return f"# {key}\n\nSEED: {seed}\n\n{plugin.describe_example(row)}\n"


def sample_renderer(cfg: DictConfig, plugin: Any, module: Any, dataset: Any) -> Callable[[int, Path], list[Path]]:
    """``render(step, out_dir) -> files`` for ``SampleRenderer``."""
    backbone = module.backbone
    spec = dataset.spec

    def render(step: int, out: Path) -> list[Path]:
        k = max(1, int(cfg.trainer.sample_prompts))
        batch = [dataset[i] for i in range(min(k, len(dataset)))]
        conditions = module.features(batch)
        seed = int(cfg.seed)
        with torch.no_grad():
            wavs, sr = backbone.sample_audio(conditions, seed=seed)
            reference = backbone.reference_audio(conditions) if step == 0 or not (out.parent / "targets").exists() else None
        files: list[Path] = []
        for i, ex in enumerate(batch):
            key = str(ex["key"]).replace("/", "__")  # keys of songs in sub-folders hold a slash
            for track, w in tracks(wavs).items():  # the main track, then any others (a song's stems) beside it
                files += write_sample(w[i].float().cpu().numpy(), sr, track_stem(out / f"pred_{i}_{key}", track),
                                      title=f"step {step} — {key}" + (f" ({track})" if track else ""))
            info = out / f"prompt_{i}_{key}.md"
            info.write_text(prompt_text(plugin, dataset.items[i].row, key, seed), encoding="utf-8")
            files.append(info)
            if reference is not None:
                if dataset.items[i].audio_path is not None:  # a row given as features only has no input file
                    src, _ = load_audio(dataset.items[i].audio_path, spec)
                    files += write_sample(src, spec.sample_rate, out.parent / "targets" / f"input_{i}_{key}",
                                          title=f"input audio — {key}")
                ref_wavs, ref_sr = reference
                files += write_sample(ref_wavs[i].float().cpu().numpy(), ref_sr, out.parent / "targets" / f"target_{i}_{key}",
                                      title=f"target (codec reconstruction) — {key}")
        return files

    return render
