"""The TorToiSe plugin's data: ai-voice-cloning's training folder, as ``tortoise-prepare`` (or AIVC's "Prepare
Dataset") writes it — ``train.txt`` with ``audio/<file>.wav|<text>`` lines (paths relative to the list's folder)
beside ``audio/``; ``validation.txt`` the same (give it as ``val_data=``). Any ``path|text`` list the core reads
works too. Every line that cannot be used is reported (``line N: ...``); lines over 200 characters and clips
outside 0.6–11.61 s are culled as DLAS does, each reported (the plugin's filter)."""
from __future__ import annotations

from audiotrain.data.readers.transcript_list import TranscriptList


class AIVCTrainingFolder(TranscriptList):
    description = "ai-voice-cloning training folder (train.txt with audio/<file>.wav|text lines, audio/)"

    def __init__(self) -> None:
        super().__init__(text_field="text", speaker_field="speaker")
