"""ACE-Step 1.5's dataset JSON: the AudioSample fields, custom_tag at each tag_position, the genre_ratio picks as the
original makes them (seed 42), labeled samples only, and a file that cannot be used said in one sentence."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from audiotrain.data.prepare import DataError
from audiotrain.data.report import BadInputReport
from audiotrain_acestep15.readers import acestep15_readers
from audiotrain_acestep15.readers_dataset_json import AceStep15DatasetJSON, select_genre_indices, with_tag
from tests.bad_corpus import tone


def _original_picks(count: int, ratio: int) -> set[int]:
    """ACE-Step 1.5's own procedure, on the global random state (restored after)."""
    state = random.getstate()
    try:
        n = int(count * ratio / 100)
        random.seed(42)
        order = list(range(count))
        random.shuffle(order)
        return set(order[:n])
    finally:
        random.setstate(state)


@pytest.mark.parametrize("count,ratio", [(0, 50), (1, 100), (7, 30), (10, 30), (13, 50), (40, 25), (100, 99), (5, 0)])
def test_genre_picks_equal_the_originals_and_leave_the_global_random_alone(count, ratio):
    state = random.getstate()
    picks = select_genre_indices(count, ratio)
    assert random.getstate() == state
    assert picks == _original_picks(count, ratio)
    assert len(picks) == int(count * ratio / 100)


def test_custom_tag_positions():
    assert with_tag("cap", "tag", "prepend") == "tag, cap"
    assert with_tag("cap", "tag", "append") == "cap, tag"
    assert with_tag("cap", "tag", "replace") == "tag"
    assert with_tag("", "tag", "append") == "tag" and with_tag("cap", "", "prepend") == "cap"


def _dataset(tmp_path: Path, samples: list, **metadata) -> Path:
    path = tmp_path / "ds" / "my_dataset.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metadata": {"name": "t", **metadata}, "samples": samples}), encoding="utf-8")
    return path


def _sample(i: int, audio: str, **more) -> dict:
    return {"id": f"{i:08x}", "audio_path": audio, "filename": Path(audio).name, "caption": f"caption {i}",
            "genre": f"genre {i}", "lyrics": f"lyrics {i}", "raw_lyrics": "", "formatted_lyrics": "", "bpm": 100 + i,
            "keyscale": "C major", "timesignature": "4", "duration": 2, "language": "en", "is_instrumental": False,
            "custom_tag": "", "labeled": True, "prompt_override": None, **more}


def test_dataset_json_rows_genre_ratio_and_tags(tmp_path):
    audio = [tone(tmp_path / "audio" / f"s{i}.wav", seconds=1.0) for i in range(10)]
    samples = [_sample(i, str(p)) for i, p in enumerate(audio)]
    samples[3]["labeled"] = False                       # not preprocessed by the original: reported
    samples[4]["custom_tag"] = "own"                     # the sample's own tag wins
    samples[5]["prompt_override"] = "caption"            # wins over a genre pick
    samples[6]["audio_path"] = "audio/s6.wav"            # relative: the JSON's parent folder has it
    path = _dataset(tmp_path, samples, custom_tag="mytag", tag_position="append", genre_ratio=50)
    assert isinstance(next(r for r in acestep15_readers() if r.matches(path)), AceStep15DatasetJSON)
    report = BadInputReport()
    rows = AceStep15DatasetJSON().read(path, report).rows
    labeled = [i for i in range(10) if i != 3]
    picked = {labeled[j] for j in _original_picks(len(labeled), 50)}
    assert [r["key"] for r in rows] == [f"{i:08x}" for i in labeled]
    for r in rows:
        i = int(r["key"], 16)
        use_genre = i in picked and i != 5
        tag = "own" if i == 4 else "mytag"
        assert r["caption"] == f"{'genre' if use_genre else 'caption'} {i}, {tag}"
        assert r["prompt_source"] == ("genre" if use_genre else "caption")
        assert (r["id"], r["lyrics"], r["bpm"], r["duration"], r["language"]) == (f"{i:08x}", f"lyrics {i}", 100 + i,
                                                                                  2, "en")
        assert Path(r["audio_path"]) == audio[i].resolve()
    assert [s.reason for s in report.skipped] == [
        "row 3 (00000003): not labeled: ACE-Step 1.5 trains on labeled samples only; write its caption (and "
        "\"labeled\": true), e.g. in ACE-Step 1.5's dataset tab"]
    assert sum(r["prompt_source"] == "genre" for r in rows) == len(picked - {5})


def test_replace_and_empty_genre(tmp_path):
    audio = tone(tmp_path / "a.wav", seconds=1.0)
    samples = [_sample(0, str(audio), genre="", prompt_override="genre"), _sample(1, str(audio), lyrics="")]
    report = BadInputReport()
    rows = AceStep15DatasetJSON().read(_dataset(tmp_path, samples, custom_tag="trig", tag_position="replace"),
                                       report).rows
    assert [r["caption"] for r in rows] == ["trig", "trig"]
    assert rows[0]["prompt_source"] == "caption" and "genre, which is empty" in report.live_notes()[0]
    assert rows[1]["lyrics"] == "[Instrumental]"


@pytest.mark.parametrize("text,match", [
    ("{\"samples\": [", r"is not valid JSON \(Expecting value at line 1 column 14\)"),
    ("[1, 2]", r"is not an ACE-Step 1\.5 dataset JSON: it needs a \"samples\" list"),
    ('{"metadata": {"tag_position": "middle"}, "samples": []}', r"metadata\.tag_position is 'middle', not one of"),
    ('{"metadata": {"genre_ratio": 150}, "samples": []}', r"metadata\.genre_ratio is 150, not a percentage"),
])
def test_a_file_that_cannot_be_used_is_one_sentence(tmp_path, text, match):
    path = tmp_path / "d.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=match):
        AceStep15DatasetJSON().read(path, BadInputReport())


def test_latin1_json_is_refused_naming_the_byte(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes('{"samples": [{"caption": "caf\xe9"}]}'.encode("latin-1"))
    with pytest.raises(DataError, match=r"is not UTF-8 text \(byte 0xe9"):
        AceStep15DatasetJSON().read(path, BadInputReport())
