"""The data forms ACE-Step 1.5 training reads, in the order a ``data=`` path is tried against them.

1. a dataset JSON file (:mod:`audiotrain_acestep15.readers_dataset_json`);
2. ACE-Step v1's HF dataset saved to disk, then v1's song folder (:mod:`audiotrain_acestep15.readers_v1`);
3. ACE-Step 1.5's song folder (:mod:`audiotrain_acestep15.readers_folder`): any other folder with audio in it.

Every reader gives the rows :mod:`audiotrain_acestep15.song_row` describes. Audio is decoded by the core to 48 kHz
stereo; a song longer than ``dataset.max_duration`` (240 s, as ACE-Step 1.5 truncates at preprocessing) is cut to its
first 240 s and the report says so. Random training crops (``dataset.crop_seconds``) come after this, from the decoded
audio.
"""
from __future__ import annotations

from audiotrain.plugins.base import DataReader

from audiotrain_acestep15.readers_dataset_json import AceStep15DatasetJSON
from audiotrain_acestep15.readers_folder import AceStep15Folder
from audiotrain_acestep15.readers_v1 import V1HFDataset, V1SongFolder

SAMPLE_RATE = 48000
CHANNELS = 2
#: seconds of a song used (ACE-Step 1.5's preprocessing truncates there): the plugin's dataset.max_duration
MAX_SECONDS = 240.0


def acestep15_readers() -> list[DataReader]:
    """The readers a plugin's ``readers()`` returns, in the order they are tried."""
    return [AceStep15DatasetJSON(), V1HFDataset(), V1SongFolder(), AceStep15Folder()]
