"""``audiotrain acestep15-preprocess DATA --output DIR``: ACE-Step 1.5's preprocessed dataset (spec §3: one
``<id>.pt`` per song + ``manifest.json``, read by its trainer with ``torch.load(weights_only=True)``), written from any
data audiotrain reads for ACE-Step 1.5 (its folder forms, its dataset JSON, v1's folder and HF forms).

The songs go through audiotrain's own preparation and feature cache (every skipped song is reported; a second run,
or training afterwards, encodes nothing again): the VAE posterior and the condition encoder's outputs on the
inference template (``encoders.py``). Per song:

- ``target_latents [T, 64]``: one draw from the posterior, as ACE-Step 1.5 samples once at preprocessing (seeded by
  ``--seed`` and the song's id, so a rerun writes the same file);
- ``attention_mask [T]``: ones;
- ``encoder_hidden_states [L, 2048]`` / ``encoder_attention_mask [L]``: the condition encoder's, as cached;
- ``context_latents [T, 128]``: ``[silence latent[:T] ‖ ones]`` (the LoRA mode's text-to-music context; the
  "lokr" mode's target-as-context leak is not reproduced);
- ``metadata`` (``preprocessed_format.song_metadata``), ``preprocess_mode`` "lora".

The id is the first 8 hex digits of the SHA-256 of the song's key (ACE-Step 1.5's ids are 8 hex characters). Extra
``KEY=VALUE`` arguments are audiotrain settings (``model.checkpoint_dir=…``, ``model.variant=…``, ``dataset.…``).
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

import torch

from audiotrain.errors import UserError

PROG = "audiotrain acestep15-preprocess"
FRAME_RATE = 25


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Write ACE-Step 1.5's preprocessed songs (<id>.pt + "
                                                        "manifest.json, as its trainer reads them) from a folder of "
                                                        "songs or a dataset JSON.")
    ap.add_argument("data", type=Path, metavar="DATA",
                    help="the songs: a folder (X.wav + X.caption.txt [+ X.lyrics.txt / X.txt, X.json, a CSV with a "
                         "file column]), ACE-Step 1.5's dataset JSON, or ACE-Step v1's folder / HF dataset")
    ap.add_argument("--output", type=Path, required=True, help="the folder to write (must not exist or be empty)")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                    help="the tensors' dtype (default: %(default)s; ACE-Step 1.5 writes bf16 on CUDA)")
    ap.add_argument("--seed", type=int, default=42, help="seed of the posterior draws (default: %(default)s)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                    help="audiotrain settings: model.checkpoint_dir=DIR (the released folders; needed unless "
                         "model.variant=tiny, the CPU test model), model.variant=base, dataset.max_duration=S")
    return ap


def _check_output(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"--output {path} exists and is not an empty folder: give a new folder.")


def song_id(key: str) -> str:
    return hashlib.sha256(str(key).encode("utf-8")).hexdigest()[:8]


def context_of(silence: torch.Tensor, frames: int) -> torch.Tensor:
    """``[silence[:T] ‖ ones]`` ``(T, 2·latent)`` through the DiT's own ``context_latents`` (the silence tiled when
    shorter than the song, as the backbone does)."""
    from audiotrain_acestep15.dit import AceStepConditionGenerationModel

    reps = -(-frames // max(1, silence.shape[0]))
    src = silence.repeat(reps, 1)[:frames] if reps > 1 else silence[:frames]
    return AceStepConditionGenerationModel.context_latents(src[None].float())[0]


def preprocess(argv: list[str]) -> int:
    from audiotrain.cli.command import run_command

    return run_command(PROG, _parser(), run, argv, highlight=False)


def run(args: argparse.Namespace) -> str:
    import tempfile

    from audiotrain.atomic_write import atomic_dir
    from audiotrain.cli.adapter_input import compose_for
    from audiotrain.plugins import registry
    from audiotrain.train.data_setup import load_data
    from audiotrain_acestep15 import encoders
    from audiotrain_acestep15.preprocessed_format import Widths, dataset_metadata, song_metadata, write_manifest, \
        write_song
    from audiotrain_acestep15.vae import sample

    _check_output(args.output)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UserError(f"{bad[0]} is not a KEY=VALUE setting: give e.g. model.checkpoint_dir=DIR.")
    cfg = compose_for("acestep15", None, [f"data={args.data}", "tracking=none", "cache=true",
                                          "dataset.val_fraction=0", *args.overrides], PROG)
    plugin = registry.get("acestep15")
    problems = plugin.validate(cfg)
    if problems:
        raise UserError(problems[0])
    with tempfile.TemporaryDirectory() as tmp:
        data = load_data(cfg, plugin, Path(tmp), "cpu", save_report=False)
    ds = data.train
    if len(ds) == 0:
        raise UserError(f"{args.data} holds no usable song (see the report above): nothing to write.")
    silence = encoders.silence_latent(cfg, lambda: encoders.make_vae(cfg))
    config = encoders.dit_config(cfg)
    widths = Widths(latent=config.audio_acoustic_hidden_dim, context=2 * config.audio_acoustic_hidden_dim,
                    encoder=config.hidden_size)
    dtype = getattr(torch, args.dtype)
    with atomic_dir(args.output) as out:
        files, ids = [], set()
        for i in range(len(ds)):
            item, feats = ds.items[i], dict(ds[i]["features"])
            row = item.row
            sid = song_id(row["key"])
            if sid in ids:
                raise UserError(f"two songs share the id {sid} (keys {row['key']!r}): rename one of them.")
            ids.add(sid)
            mean, std = feats["latent_mean"].float(), feats["latent_std"].float()
            g = torch.Generator().manual_seed(int(args.seed) * 1_000_003 + int(sid, 16))
            frames = mean.shape[0]
            bpm = row.get("bpm")
            meta_row = {**row, "caption": row.get("caption") or "", "lyrics": row.get("lyrics") or "[Instrumental]",
                        "bpm": None if bpm in (None, "") else int(round(float(bpm)))}
            files.append(write_song(
                out, sid, target_latents=sample(mean, std, g), attention_mask=torch.ones(frames),
                encoder_hidden_states=feats["encoder_hidden_states"].float(),
                encoder_attention_mask=feats["encoder_attention_mask"].float(),
                context_latents=context_of(silence, frames),
                metadata=song_metadata(meta_row, duration=int(item.duration)), dtype=dtype, widths=widths))
        write_manifest(out, [f.name for f in files], dataset_metadata(num_samples=len(files)))
    return (f"Wrote {len(files)} song file(s) + manifest.json to {args.output} (ACE-Step 1.5's preprocessed layout, "
            f"{args.dtype}); its trainer reads the folder as its tensor directory.")
