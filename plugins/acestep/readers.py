"""ACE-Step data formats: the raw song folder of the training guide, and its HF dataset on disk.

Raw folder (sub-folders too): ``X.mp3`` (or .wav/.flac/.ogg), ``X_prompt.txt`` (comma-separated tags), ``X_lyrics.txt``
(optional: the original silently dropped songs without it; we keep them with empty lyrics and say so).
HF dataset: ``datasets.Dataset.save_to_disk`` output with the converter's features (keys, filename,
tags, norm_lyrics, speaker_emb_path, recaption); identical rows are repeats (the converter's ``--repeat_count``),
a key repeated with another file or text is reported. Relative filenames are tried against the working
directory, then the dataset folder and its parent (the training guide puts audio inside the dataset): the core's
``audiotrain.data.readers.hf_audio_dataset`` does the reading; this module names the columns.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from audiotrain.data.readers.hf_audio_dataset import HFAudioDataset, is_hf_dataset
from audiotrain.data.readers.sidecar_folder import Clip, Sidecar, SidecarFolder


def split_tags(prompt: str) -> list[str]:
    """``"pop, male vocal,  120 bpm"`` → ``["pop", "male vocal", "120 bpm"]`` (empty pieces dropped)."""
    return [t.strip() for t in prompt.split(",") if t.strip()]


class RawSongFolder(SidecarFolder):
    description = "raw song folder (X.mp3 + X_prompt.txt [+ X_lyrics.txt])"
    sidecars = (Sidecar("prompt", "_prompt.txt", "tags", "write the song's tags (comma-separated) into it"),
                Sidecar("lyrics", "_lyrics.txt", "lyrics", required=False,
                        missing_note="trained as instrumental (empty lyrics)"))

    def matches(self, path: Path) -> bool:
        return not is_hf_dataset(path) and super().matches(path)

    def row(self, clip: Clip, root: Path) -> dict[str, Any]:
        """A song's key is its path relative to the folder without extension."""
        return {"key": clip.key, "audio_path": str(clip.audio.resolve()), "tags": split_tags(clip.texts["prompt"]),
                "lyrics": clip.texts["lyrics"], "speaker_emb_path": "", "recaption": {}}


class HFSongDataset(HFAudioDataset):
    description = "HF dataset saved to disk (keys, filename, tags, norm_lyrics, speaker_emb_path, recaption)"
    key_column, file_column = "keys", "filename"
    required = ("keys", "filename", "tags", "norm_lyrics")
    text_columns = {"norm_lyrics": "lyrics"}
    missing_hint = "convert it with `audiotrain convert`"

    def row(self, record: Mapping[str, Any], audio: Path) -> dict[str, Any]:
        rec = record.get("recaption") or {}
        return {"key": str(record["keys"]), "audio_path": str(audio), "tags": list(record["tags"] or []),
                "lyrics": str(record["norm_lyrics"] or ""), "speaker_emb_path": str(record.get("speaker_emb_path") or ""),
                "recaption": {k: v for k, v in dict(rec).items() if isinstance(v, str) and v.strip()}}
