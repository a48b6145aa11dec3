"""The preprocessed files ACE-Step 1.5's trainer reads: one ``<id>.pt`` per song and a ``manifest.json``.

A song file is a ``torch.save`` dict (read by the trainer with ``torch.load(weights_only=True)``), every tensor in one
floating dtype (the handler's: bf16 on CUDA, fp32 on CPU):

- ``target_latents`` [T, 64]: the VAE latents (25 frames/s)
- ``attention_mask`` [T]: ones
- ``encoder_hidden_states`` [L, 2048]: the condition encoder's output (L = 769 in ACE-Step 1.5: 512 lyric + 1 timbre
  + 256 text positions)
- ``encoder_attention_mask`` [L]
- ``context_latents`` [T, 128]: [silence latents ‖ ones]
- ``metadata``: {audio_path, filename, caption, lyrics, duration, bpm, keyscale, timesignature, language,
  is_instrumental, preprocess_mode} — texts, ints, a bool, bpm may be None

(64/128/2048 are the released models' widths; a ``tiny`` build passes its own :class:`Widths`.)
``manifest.json`` is ``{"metadata": {the dataset's metadata}, "samples": ["<id>.pt", ...], "num_samples": N}``, the
sample paths relative to the folder. Without a manifest, ACE-Step 1.5's loader takes every ``*.pt`` in the folder;
:func:`song_files` does the same (sorted by name). Every file is written atomically (``audiotrain.atomic_write``) and
read as data only (``audiotrain.safe_files.load_torch``: a file carrying pickled code is refused).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from audiotrain.atomic_write import atomic_path, atomic_write_text
from audiotrain.data.report import BadInputReport
from audiotrain.errors import UserError
from audiotrain.safe_files import BadFileError, load_torch, read_json

TENSORS = ("target_latents", "attention_mask", "encoder_hidden_states", "encoder_attention_mask", "context_latents")
KEYS = (*TENSORS, "metadata")
METADATA_KEYS = ("audio_path", "filename", "caption", "lyrics", "duration", "bpm", "keyscale", "timesignature",
                 "language", "is_instrumental", "preprocess_mode")
PREPROCESS_MODES = ("lora", "lokr")
MANIFEST = "manifest.json"
EXPECTED = "an ACE-Step 1.5 preprocessed song file (<id>.pt)"


@dataclass(frozen=True)
class Widths:
    """The last dimension of the latents, the context and the encoder states (the released models': 64, 128, 2048;
    a negative width is not checked)."""

    latent: int = 64
    context: int = 128
    encoder: int = 2048


ANY_WIDTHS = Widths(-1, -1, -1)


class PreprocessedFormatError(UserError):
    """Tensors or metadata that do not make an ACE-Step 1.5 preprocessed song."""


def shape_problems(data: Mapping[str, Any], widths: Widths) -> list[str]:
    """Everything wrong with a song dict's tensors (empty when it is right): missing keys, ranks, widths, lengths."""
    missing = [k for k in TENSORS if not isinstance(data.get(k), torch.Tensor)]
    if missing:
        return [f"no tensor {', '.join(missing)}"]
    shapes = {k: tuple(data[k].shape) for k in TENSORS}
    want = {"target_latents": ("T", widths.latent), "attention_mask": ("T",), "context_latents": ("T", widths.context),
            "encoder_hidden_states": ("L", widths.encoder), "encoder_attention_mask": ("L",)}
    problems, sizes = [], {}
    for key, dims in want.items():
        shape = shapes[key]
        if len(shape) != len(dims) or any(isinstance(d, int) and d >= 0 and s != d for s, d in zip(shape, dims)):
            problems.append(f"{key} is {list(shape)}, not [{', '.join(map(str, dims))}]")
            continue
        if sizes.setdefault(dims[0], shape[0]) != shape[0]:
            problems.append(f"{key} has {shape[0]} positions where the others have {dims[0]} = {sizes[dims[0]]}")
    if not problems and sizes["T"] == 0:
        problems.append("target_latents has no frames")
    return problems


def song_metadata(row: Mapping[str, Any], *, duration: int, preprocess_mode: str = "lora") -> dict[str, Any]:
    """The ``metadata`` of a song file from its manifest row (``audiotrain_acestep15.song_row``; the audio under
    ``audio`` or ``audio_path``) and the whole seconds of audio the latents hold."""
    audio = row.get("audio_path") or next(iter((row.get("audio") or {}).values()), "")
    return {"audio_path": str(audio), "filename": os.path.basename(str(audio)), "caption": str(row["caption"]),
            "lyrics": str(row["lyrics"]), "duration": int(duration), "bpm": row.get("bpm"),
            "keyscale": str(row.get("keyscale") or ""), "timesignature": str(row.get("timesignature") or ""),
            "language": str(row.get("language") or "unknown"), "is_instrumental": bool(row.get("is_instrumental")),
            "preprocess_mode": preprocess_mode}


def _check_metadata(metadata: Mapping[str, Any]) -> None:
    keys = sorted(metadata)
    if keys != sorted(METADATA_KEYS):
        raise PreprocessedFormatError(f"song metadata has the keys {keys}, not {sorted(METADATA_KEYS)}: build it with "
                                      f"song_metadata(row, duration=...).")
    if metadata["preprocess_mode"] not in PREPROCESS_MODES:
        raise PreprocessedFormatError(f"preprocess_mode {metadata['preprocess_mode']!r} is not one of "
                                      f"{', '.join(PREPROCESS_MODES)}.")
    bpm = metadata["bpm"]
    if bpm is not None and (isinstance(bpm, bool) or not isinstance(bpm, int)):
        raise PreprocessedFormatError(f"song metadata bpm {bpm!r} is neither a whole number nor None.")


def write_song(directory: str | Path, song_id: str, *, target_latents: torch.Tensor, attention_mask: torch.Tensor,
               encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor,
               context_latents: torch.Tensor, metadata: Mapping[str, Any], dtype: torch.dtype | None = None,
               widths: Widths = Widths()) -> Path:
    """Write ``<directory>/<song_id>.pt`` atomically: the five tensors on the CPU in ``dtype`` (default: the dtype of
    ``target_latents``), each in its own storage, and ``metadata`` (:func:`song_metadata`)."""
    tensors = {"target_latents": target_latents, "attention_mask": attention_mask,
               "encoder_hidden_states": encoder_hidden_states, "encoder_attention_mask": encoder_attention_mask,
               "context_latents": context_latents}
    problems = shape_problems(tensors, widths)
    if problems:
        raise PreprocessedFormatError(f"song {song_id}: {'; '.join(problems)}.")
    dtype = dtype or target_latents.dtype
    if not dtype.is_floating_point:
        raise PreprocessedFormatError(f"song {song_id}: dtype {dtype} is not a floating type (bf16, fp16 or fp32).")
    _check_metadata(metadata)
    if not song_id or os.sep in song_id or song_id.startswith("."):
        raise PreprocessedFormatError(f"song id {song_id!r} cannot name a file: use letters, digits, - and _.")
    data: dict[str, Any] = {k: v.detach().to("cpu", dtype).contiguous().clone() for k, v in tensors.items()}
    data["metadata"] = dict(metadata)
    target = Path(directory) / f"{song_id}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        torch.save(data, tmp)
    return target


def read_song(path: str | Path, widths: Widths | None = None) -> dict[str, Any]:
    """A song file as data (``weights_only``; a file carrying code is refused), its tensors checked (against
    ``widths`` when given, else only ranks and lengths); ``metadata`` is ``{}`` when the file has none, as the
    trainer reads it."""
    data = load_torch(path, expected=EXPECTED)
    if not isinstance(data, dict):
        raise BadFileError(f"{path} holds a {type(data).__name__}, not a dict of tensors; pass {EXPECTED}.")
    problems = shape_problems(data, widths or ANY_WIDTHS)
    if problems:
        raise BadFileError(f"{path} is no ACE-Step 1.5 preprocessed song: {'; '.join(problems)}.")
    data.setdefault("metadata", {})
    return data


def dataset_metadata(*, num_samples: int, name: str = "audiotrain", custom_tag: str = "", tag_position: str = "prepend",
                     all_instrumental: bool = False, genre_ratio: int = 0) -> dict[str, Any]:
    """The manifest's ``metadata`` in ACE-Step 1.5's ``DatasetMetadata`` fields."""
    return {"name": name, "custom_tag": custom_tag, "tag_position": tag_position,
            "created_at": datetime.now().isoformat(), "num_samples": int(num_samples),
            "all_instrumental": bool(all_instrumental), "genre_ratio": genre_ratio}


def write_manifest(directory: str | Path, songs: Sequence[str | Path], metadata: Mapping[str, Any]) -> Path:
    """Write ``<directory>/manifest.json`` atomically: the song files (paths relative to ``directory``)."""
    directory = Path(directory)
    rel = []
    for p in songs:
        p = Path(p)
        try:
            rel.append((p if not p.is_absolute() else p.relative_to(directory.resolve())).as_posix())
        except ValueError:
            raise PreprocessedFormatError(f"{p} is not inside {directory}: a manifest lists its own folder's files.") \
                from None
    out = directory / MANIFEST
    atomic_write_text(out, json.dumps({"metadata": dict(metadata), "samples": rel, "num_samples": len(rel)}, indent=2,
                                      ensure_ascii=False))
    return out


def song_files(directory: str | Path, report: BadInputReport | None = None) -> list[Path]:
    """The song files of a preprocessed folder: the manifest's (relative paths against the folder, then the working
    directory; a listed file that is missing is reported in ``report``, or without one an error), else every ``*.pt`` in it, sorted by name."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return sorted(p for p in directory.glob("*.pt") if not p.name.startswith(".") and p.is_file())
    data = read_json(manifest, expected="a manifest.json {metadata, samples, num_samples}")
    samples = data.get("samples") if isinstance(data, dict) else None
    if not isinstance(samples, list) or not all(isinstance(s, str) for s in samples):
        raise BadFileError(f"{manifest} has no \"samples\" list of paths; write it again (or delete it to use every "
                           f"*.pt in the folder).")
    found = []
    for s in samples:
        p = Path(s).expanduser()
        cands = [p] if p.is_absolute() else [directory / p, Path(os.getcwd()) / p]
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            reason = f"lists {s}, which is not in {directory}: preprocess that song again"
            if report is None:
                raise BadFileError(f"{manifest} {reason} (or delete the manifest to use every *.pt in the folder).")
            report.add(manifest, reason)
            continue
        found.append(hit)
    return found
