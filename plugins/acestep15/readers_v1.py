"""ACE-Step v1's data forms, read for ACE-Step 1.5 through the core's readers (nothing of the ``acestep`` plugin).

- v1's song folder: ``X.mp3`` + ``X_prompt.txt`` (comma-separated tags: the caption, as ``"tag, tag"``) [+
  ``X_lyrics.txt``; a song without it is trained as instrumental, and the report says so]. Recognised when the
  folder has ``*_prompt.txt`` files and none of ACE-Step 1.5's own (``*.caption.txt``, a CSV).
- v1's HF dataset saved to disk (its converter's ``keys``, ``filename``, ``tags``, ``norm_lyrics``): the tags joined
  are the caption, ``norm_lyrics`` the lyrics. v1's ``recaption`` variants and speaker embeddings have no place in
  ACE-Step 1.5's conditioning and are not read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from audiotrain.data.readers.hf_audio_dataset import HFAudioDataset, is_hf_dataset
from audiotrain.data.readers.sidecar_folder import Clip, Sidecar, SidecarFolder
from audiotrain.data.walk import walk_files

from audiotrain_acestep15.readers_folder import CAPTION
from audiotrain_acestep15.song_row import song_row

PROMPT = "_prompt.txt"


def join_tags(tags: Any) -> str:
    """v1's tags (a list, or one comma-separated text) as one caption: ``"pop, male vocal"``."""
    pieces = tags.split(",") if isinstance(tags, str) else [str(t) for t in tags or ()]
    return ", ".join(t.strip() for t in pieces if t.strip())


class V1SongFolder(SidecarFolder):
    description = "ACE-Step v1 song folder (X.mp3 + X_prompt.txt [+ X_lyrics.txt])"
    sidecars = (Sidecar("prompt", PROMPT, "tags", "write the song's tags (comma-separated) into it", non_empty=True),
                Sidecar("lyrics", "_lyrics.txt", "lyrics", required=False,
                        missing_note="trained as instrumental ([Instrumental])"))

    def matches(self, path: Path) -> bool:
        if not path.is_dir() or is_hf_dataset(path):
            return False
        prompts = False
        for p in walk_files(path):
            if p.name.endswith(CAPTION) or p.suffix.lower() == ".csv":
                return False  # ACE-Step 1.5's own layout
            prompts = prompts or p.name.endswith(PROMPT)
        return prompts

    def row(self, clip: Clip, root: Path) -> dict[str, Any]:
        return song_row(clip.key, clip.audio, caption=join_tags(clip.texts["prompt"]), lyrics=clip.texts["lyrics"])


class V1HFDataset(HFAudioDataset):
    description = "ACE-Step v1 HF dataset saved to disk (keys, filename, tags, norm_lyrics)"
    key_column, file_column = "keys", "filename"
    required = ("keys", "filename", "tags", "norm_lyrics")
    text_columns = {"norm_lyrics": "lyrics"}
    missing_hint = "it is not ACE-Step v1's converter output; save it with those columns"

    def record_problem(self, record: Mapping[str, Any]) -> str | None:
        if not join_tags(record["tags"]):
            return "no tags (ACE-Step 1.5 trains on captioned songs only): give the row its tags"
        return None

    def row(self, record: Mapping[str, Any], audio: Path) -> dict[str, Any]:
        return song_row(str(record["keys"]), audio, caption=join_tags(record["tags"]),
                        lyrics=str(record["norm_lyrics"] or ""))
