"""``audiotrain songgen-preprocess DATA --output DIR``: SongGen's preprocessed dataset, written from any data
audiotrain reads for SongGen (the metadata ``.jsonl``, a folder of songs with stems).

The same columns and meanings as SongGen's ``preprocess_data.py`` (spec songgen.md §2; ``preprocessed.py`` reads
them back): ``labels`` (the mix's X-Codec codes in the delay pattern, start column dropped, int16),
``ref_audio_ids_{vocal,acc,drum}`` (each stem's codes with its own BOS/EOS ids and the start column kept; zeros
when the song has no such stem — audiotrain reads no drum stems, so that column is always zeros),
``refaudio_length_*`` and ``target_length`` (samples at 16 kHz), ``input_ids`` (the caption's flan-t5 ids),
``prompt_input_ids`` (``[261] + VoiceBpe + [0]``), ``mert_input`` (the vocal stem's path, "random" without one),
``id`` / ``fname`` and any ``*_energy``. Saved as a ``DatasetDict`` with ``train`` and ``eval`` splits, so
SongGen's trainer takes it as ``save_to_disk`` and audiotrain as ``data=DIR``.

The songs go through audiotrain's own preparation first — every skipped song is reported — and the codes are
the feature cache's (a second run, or training afterwards, encodes nothing again). Extra ``KEY=VALUE`` arguments
are audiotrain settings (``model.codec_path=…``, ``model.text_encoder_path=…``, ``dataset.max_duration=…``).
The songs are decoded and encoded by ``dataset.prepare_workers`` processes (default auto: one per CPU core), as
for training; the dataset written is byte for byte the same whatever their number.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiotrain.errors import UserError

PROG = "audiotrain songgen-preprocess"
SAMPLE_RATE = 16000
EVAL_DEFAULT = 24  # SongGen's max_eval_samples


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Write SongGen's preprocessed dataset (its preprocess_data.py "
                                                        "columns) from a folder of songs or a metadata .jsonl.")
    ap.add_argument("data", type=Path, metavar="DATA", help="the songs: a folder (X.wav + X_prompt.txt [+ "
                                                           "X_lyrics.txt, X_vocal.*, X_acc.*]) or SongGen's .jsonl")
    ap.add_argument("--output", type=Path, required=True, help="the folder to write (must not exist or be empty)")
    ap.add_argument("--eval", type=int, default=None, dest="eval_count",
                    help=f"songs in the eval split, taken from the end (default: {EVAL_DEFAULT}, at most a tenth)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                    help="audiotrain settings, e.g. model.codec_path=DIR model.text_encoder_path=DIR; "
                         "dataset.prepare_workers=N: processes that decode and encode the songs (default: auto, "
                         "one per CPU core; 0: in this process)")
    return ap


def caption_ids(cfg: Any):
    """``caption -> flan-t5 ids`` of the run's text encoder (its tokenizer only; the model is not loaded)."""
    from audiotrain_songgen.text_encoder import TEXT_EXPECTED, _check_dir, t5_byte_tokenizer

    path = cfg.model.get("text_encoder_path")
    if path:
        from transformers import AutoTokenizer

        from audiotrain.safe_files import BadFileError, first_line, where

        folder = _check_dir(path, "model.text_encoder_path")
        try:
            tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
            raise BadFileError(f"{where('model.text_encoder_path', folder)} holds no tokenizer readable without "
                               f"running code ({first_line(exc)}); pass {TEXT_EXPECTED}.") from None
    else:
        tok = t5_byte_tokenizer()
    return lambda caption: list(tok(str(caption).strip(), truncation=False)["input_ids"])


def _int16(t: torch.Tensor) -> np.ndarray:
    return t.to(torch.int16).numpy()


def song_columns(item: Any, feats: dict[str, torch.Tensor], ids_of) -> dict[str, Any]:
    """One song's columns, as preprocess_data.py writes them."""
    from audiotrain_songgen import patterns as P

    row = item.row
    codes = feats["codes_mix"].long()
    frames = codes.shape[-1]
    out: dict[str, Any] = {"id": row["key"], "fname": row["key"]}
    out["input_ids"] = list(row["t5_ids"]) if row.get("t5_ids") else ids_of(row.get("caption", ""))
    out["prompt_input_ids"] = [int(x) for x in feats["lyrics_ids"].tolist()]
    voice = row["audio"].get("vocal")
    out["mert_input"] = str(voice) if voice else "random"
    out["labels"] = _int16(P.delay(codes))
    out["target_length"] = int(round(item.durations[next(iter(item.durations))] * SAMPLE_RATE))
    for atype in ("vocal", "acc", "drum"):
        bos, eos = P.TRACK_SPECIAL[atype]
        stem = feats.get(f"codes_{atype}")
        if stem is None:
            out[f"ref_audio_ids_{atype}"] = np.zeros((codes.shape[0], frames + codes.shape[0] + 1), np.int16)
            out[f"refaudio_length_{atype}"] = 0
        else:
            out[f"ref_audio_ids_{atype}"] = _int16(P.delay(stem.long(), bos=bos, eos=eos, keep_start=True))
            seconds = item.durations.get(atype)
            out[f"refaudio_length_{atype}"] = (int(round(seconds * SAMPLE_RATE)) if seconds is not None
                                               else int(stem.shape[-1]) * 320)
    for name, value in row.items():
        if name.endswith("_energy"):
            out[name] = float(value)
    return out


def _check_output(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"--output {path} exists and is not an empty folder: give a new folder (SongGen's "
                        f"save_to_disk must be empty too).")


def preprocess(argv: list[str]) -> int:
    from audiotrain.cli.command import run_command

    return run_command(PROG, _parser(), run, argv)


def run(args: argparse.Namespace) -> str:
    import tempfile

    from datasets import Dataset, DatasetDict

    from audiotrain.atomic_write import atomic_dir
    from audiotrain.cli.adapter_input import compose_for
    from audiotrain.plugins import registry
    from audiotrain.train.data_setup import load_data

    _check_output(args.output)
    if args.eval_count is not None and args.eval_count < 0:
        raise UserError(f"--eval {args.eval_count} is negative: give how many songs go to the eval split (0 for none).")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UserError(f"{bad[0]} is not a KEY=VALUE setting: give e.g. model.codec_path=DIR.")
    cfg = compose_for("songgen", None, [f"data={args.data}", "tracking=none", "cache=true", "dataset.val_fraction=0",
                                        *args.overrides], PROG)
    plugin = registry.get("songgen")
    problems = plugin.validate(cfg)
    if problems:
        raise UserError(problems[0])
    with tempfile.TemporaryDirectory() as tmp:
        data = load_data(cfg, plugin, Path(tmp), "cpu", save_report=False)
    ids_of = caption_ids(cfg)
    ds = data.train
    songs = [song_columns(ds.items[i], dict(ds[i]["features"]), ids_of) for i in range(len(ds))]
    n = len(songs)
    n_eval = min(EVAL_DEFAULT, n // 10) if args.eval_count is None else min(int(args.eval_count), n)
    splits = {"train": songs[: n - n_eval], "eval": songs[n - n_eval:]}
    if not splits["train"]:
        raise UserError(f"--eval {n_eval} leaves no song to train on ({n} usable): give a smaller --eval.")
    columns = list(songs[0])
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # one line says what was written
    with atomic_dir(args.output) as out:
        DatasetDict({k: Dataset.from_list(v) if v else Dataset.from_dict({c: [] for c in columns})
                     for k, v in splits.items()}).save_to_disk(str(out))
    return (f"Wrote {len(splits['train'])} train + {len(splits['eval'])} eval songs to {args.output} (SongGen's "
            f"preprocess_data.py columns). SongGen's trainer reads it as save_to_disk={args.output}; audiotrain as "
            f"data={args.output}.")
