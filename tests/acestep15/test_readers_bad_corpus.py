"""The bad-input corpus (``tests/bad_corpus.py``) through every ACE-Step 1.5 reader, with the core corpus test's own
checks (``check_every_offer``): every file offered is used or reported with the reason its kind expects, and
``usable + skipped == offered``. The plugin's readers run without the plugin registered (the core test enumerates
registered plugins; this one runs them until then), decoding as the plugin does: 48 kHz stereo, at most 240 s."""
from __future__ import annotations

import pytest

from audiotrain.data.audio_io import AudioSpec
from audiotrain.data.prepare import prepare_items
from audiotrain.data.report import BadInputReport
from audiotrain_acestep15.readers import CHANNELS, MAX_SECONDS, SAMPLE_RATE, acestep15_readers
from tests.core.test_bad_corpus import _layout, check_every_offer

SPEC = AudioSpec(sample_rate=SAMPLE_RATE, channels=CHANNELS, min_duration=0.0, max_duration=MAX_SECONDS)
READERS = acestep15_readers()


@pytest.mark.parametrize("which", range(len(READERS)), ids=[type(r).__name__ for r in READERS])
def test_every_file_of_the_bad_corpus_is_used_or_reported(which, tmp_path):
    reader = READERS[which]
    root = tmp_path.resolve() / "data"
    data, offers, listfile = _layout(reader, root)
    # the plugin's order of readers picks this one for this layout
    assert next(r for r in acestep15_readers() if r.matches(data)).description == reader.description
    report = BadInputReport(source=str(data))
    items = prepare_items(reader.read(data, report), None, SPEC, [], None, report)
    report.usable = len(items)
    check_every_offer(reader, offers, items, report, listfile, root, tmp_path)
    assert report.usable > 5 and len(report.skipped) > 10
