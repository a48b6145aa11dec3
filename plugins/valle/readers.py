"""VALL-E data formats: a folder of voice clips with transcripts, and LJSpeech-style ``path|text`` lists.

Voice folder: ``voices/{speaker}/clip.wav`` (or .flac/.mp3/.ogg) beside ``clip.txt`` holding the transcript.
The speaker is the clip's folder relative to the root (``alice``; ``group/alice`` when nested); clips
directly in the root belong to a speaker named after the root. This is how VALL-E users lay out
``./voices/{group}/{speaker}/`` before transcribing, with the transcripts written out beside the audio.

List file: the core's :class:`~audiotrain.data.readers.transcript_list.TranscriptList` (``train.txt`` or
LJSpeech's ``metadata.csv``). Rows: ``{key: speaker/stem, audio_path, text, speaker, language}``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from audiotrain.data.readers.sidecar_folder import Clip, Sidecar, SidecarFolder
from audiotrain.data.readers.transcript_list import TranscriptList, find_list_file


class VoiceFolder(SidecarFolder):
    """Voice clips with same-name ``.txt`` transcripts; one sub-folder per speaker."""

    description = "voice folder ({speaker}/clip.wav + clip.txt transcript)"
    sidecars = (Sidecar("text", ".txt", "transcript", "write what is said in the clip into it", collapse=True,
                        non_empty=True),)

    def __init__(self, language: str | None = "en-us"):
        self.language = language

    def matches(self, path: Path) -> bool:
        return find_list_file(path) is None and super().matches(path)

    def row(self, clip: Clip, root: Path) -> dict[str, Any]:
        speaker = root.name if clip.folder == "." else clip.folder
        return {"key": f"{speaker}/{clip.audio.stem}", "audio_path": str(clip.audio), "text": clip.texts["text"],
                "speaker": speaker, "language": self.language}


class LJSpeechList(TranscriptList):
    """``train.txt`` (``path|text[|speaker]``) or LJSpeech ``metadata.csv``, with VALL-E's row fields."""

    def __init__(self, language: str | None = "en-us"):
        super().__init__(text_field="text", speaker_field="speaker", extra={"language": language})
