"""The bad-input corpus (``tests/bad_corpus.py``) through every data reader of every installed plugin, the kit's
readers and the tiny-streams plugin: reading and decoding (what ``load_data`` does before its encoders) never crash,
every example offered is either used or in the bad-input report with the reason its kind expects, and
``usable + skipped == offered``.

What is offered, per reader: a folder gives one offer per file with an audio extension (read ones and others such
as ``.m4a``; links to nothing and named pipes included) plus one per text file no audio file claims; a list gives one per non-empty line; a dataset one per row; the
stem folder one per key. Each report entry belongs to exactly one offer (its audio file, one of its text files,
``line N:`` of the list, ``row N (...)`` of the dataset)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from audiotrain.data.audio_io import AUDIO_EXTENSIONS, OTHER_AUDIO_EXTENSIONS, AudioSpec
from audiotrain.data.prepare import prepare_items, resolve_manifest
from audiotrain.data.readers.hf_audio_dataset import HFAudioDataset
from audiotrain.data.readers.sidecar_folder import SidecarFolder
from audiotrain.data.readers.transcript_list import TranscriptList
from audiotrain.data.report import BadInputReport
from audiotrain.plugins import registry
from tests import bad_corpus as bc
from tests.core.test_kit_readers import CaptionFolder  # the kit's sidecar folder as a plugin uses it


KIT_SPEC = AudioSpec(sample_rate=16000, channels=1, min_duration=1.0, max_duration=30.0)


def _cases() -> list:
    cases = [pytest.param(name, i, id=f"{name}-{type(r).__name__}")
             for name, plugin in sorted(registry.discover().items()) for i, r in enumerate(plugin.readers())]
    return cases + [pytest.param("kit", "sidecar", id="kit-SidecarFolder"),
                    pytest.param("kit", "list", id="kit-TranscriptList"),
                    pytest.param("tinystreams", 0, id="tinystreams-StemFolder")]


def _cfg(name: str, root: Path):
    from tests.conftest import compose

    return compose([f"model={name}", f"data={root}", "tracking=none", "dataset.num_workers=0"])


def _layout(reader, root: Path) -> tuple[Path, list[bc.Offer], Path | None]:
    """Write the corpus in ``reader``'s format; (the ``data=`` path, the offers, the list file if any)."""
    if isinstance(reader, SidecarFolder):
        return root, bc.sidecar_folder(root, reader.sidecars), None
    if isinstance(reader, TranscriptList):
        listfile, offers = bc.transcript_list(root)
        return root, offers, listfile
    kind = type(reader).__name__
    if isinstance(reader, HFAudioDataset):
        return root, bc.hf_dataset(root), None
    if kind == "AceStep15DatasetJSON":
        listfile, offers = bc.dataset_json(root)
        return listfile, offers, None
    if kind == "SongGenDataset":
        return root, bc.songgen_preprocessed(root), None
    if kind == "SongMetadata":
        listfile, offers = bc.song_metadata(root)
        return root, offers, listfile
    if kind == "StemFolder":
        return root, bc.stem_folder(root), None
    raise AssertionError(f"the bad corpus has no layout for the reader {kind} ({reader.description}): add one")


def _offered(reader, data: Path, listfile: Path | None) -> int:
    """What the reader is given, counted from the files on disk (not from the corpus's own list)."""
    if isinstance(reader, SidecarFolder):
        files = _non_dirs(data)
        exts = AUDIO_EXTENSIONS + OTHER_AUDIO_EXTENSIONS
        audio = {f.parent / f.stem for f in files if f.suffix.lower() in exts}
        suffixes = [s.suffix for s in reader.sidecars]
        orphans = [f for f in files if (s := next((x for x in suffixes if f.name.endswith(x)), None))
                   and f.parent / f.name[: -len(s)] not in audio]
        return sum(f.suffix.lower() in exts for f in files) + len(orphans)
    if listfile is not None:
        return sum(1 for line in listfile.read_bytes().split(b"\n") if line.strip())
    if type(reader).__name__ == "AceStep15DatasetJSON":
        import json

        return len(json.loads((data / "dataset.json").read_text(encoding="utf-8"))["samples"])
    if isinstance(reader, HFAudioDataset) or type(reader).__name__ == "SongGenDataset":
        from datasets import load_from_disk

        ds = load_from_disk(str(data))
        return len(ds["train"] if isinstance(ds, dict) else ds)
    return len({p.name.split(".")[0] for p in data.glob("*.*.wav")})


def _non_dirs(root: Path) -> list[Path]:
    """Every entry below ``root`` that is not a folder (links not followed), hidden ones left out — counted
    independently of the reader's own walk."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not os.path.islink(os.path.join(dirpath, d))]
        out += [Path(dirpath, f) for f in filenames if not f.startswith(".")]
    return out


def _read(plugin_name: str, which, root: Path):
    """(reader, offers, items, report, listfile): the corpus read and decoded as ``load_data`` does it."""
    report = BadInputReport()
    if plugin_name == "kit":
        reader = CaptionFolder() if which == "sidecar" else TranscriptList(text_field="text", speaker_field="speaker")
        data, offers, listfile = _layout(reader, root)
        assert reader.matches(data)
        report.source = str(data)
        items = prepare_items(reader.read(data, report), None, KIT_SPEC, [], None, report)
        return reader, offers, items, report, listfile
    if plugin_name == "tinystreams":
        from tests.core.tiny_streams import TinyStreams

        plugin, cfg = TinyStreams(), None
    else:
        plugin = registry.get(plugin_name)
        cfg = _cfg(plugin_name, root)
    reader = plugin.readers()[which]
    data, offers, listfile = _layout(reader, root)
    manifest = resolve_manifest(str(data), plugin, report)
    assert manifest.format == reader.description  # the plugin picks this reader for this layout
    items = prepare_items(manifest, plugin, plugin.audio_streams(cfg), [], None, report)
    items = plugin.filter_items(items, cfg, report)
    report.usable = len(items)
    return reader, offers, items, report, listfile


def _owner(entry, offers: list[bc.Offer], listfile: Path | None) -> list[bc.Offer]:
    """The offers a report entry is about: by its file (audio or text), by ``line N:`` or by ``row N (``."""
    path = os.path.abspath(entry.path)
    out = []
    for o in offers:
        by_file = any(path == os.path.abspath(f) for f in o.files)
        by_line = o.line is not None and entry.path == str(listfile) and entry.reason.startswith(f"line {o.line}:")
        by_row = o.row is not None and entry.reason.startswith(f"row {o.row} (")
        if by_file or by_line or by_row:
            out.append(o)
    return out


@pytest.mark.parametrize("plugin_name,which", _cases())
def test_every_file_of_the_bad_corpus_is_used_or_reported(plugin_name, which, tmp_path):
    root = tmp_path.resolve() / "data"
    reader, offers, items, report, listfile = _read(plugin_name, which, root)
    check_every_offer(reader, offers, items, report, listfile, root, tmp_path)
    print(f"{plugin_name}/{type(reader).__name__}: {len(offers)} offered, {report.usable} used, "
          f"{len(report.skipped)} reported")


def check_every_offer(reader, offers: list[bc.Offer], items, report: BadInputReport, listfile: Path | None,
                      root: Path, tmp_path: Path) -> None:
    """What the corpus test asserts of one reader's read and decoded corpus (also called by plugins' own tests)."""
    # the corpus's offers are what the reader is given, counted from the disk
    assert len(offers) == _offered(reader, root, listfile)
    assert len({o.name for o in offers}) == len(offers)
    # every report entry belongs to exactly one offer, and no offer has two
    owners: dict[str, list] = {}
    for entry in report.skipped:
        found = _owner(entry, offers, listfile)
        assert len(found) == 1, f"report entry {entry} belongs to {[o.name for o in found]}"
        owners.setdefault(found[0].name, []).append(entry)
    assert all(len(v) == 1 for v in owners.values()), {k: v for k, v in owners.items() if len(v) > 1}
    used = {os.path.realpath(p) for it in items for p in it.row["audio"].values()}
    fates = {}
    for o in offers:
        if o.name in owners:
            fates[o.name] = owners[o.name][0].reason
        elif o.files and os.path.realpath(o.files[0]) in used:
            fates[o.name] = bc.USED
        else:
            fates[o.name] = "LOST (neither used nor reported)"
    wrong = {o.name: (o.expect, fates[o.name]) for o in offers
             if not (fates[o.name] == bc.USED if o.expect == bc.USED else re.search(o.expect, fates[o.name]))}
    assert not wrong, "\n".join(f"{n}: expected {e!r}, got {g!r}" for n, (e, g) in wrong.items())
    # used text files in UTF-16 or with a BOM give their text; kept audio that was changed is said in a note
    rows = {os.path.realpath(it.row["audio"][next(iter(it.row["audio"]))]): it.row for it in items}
    for o in offers:
        kind = next((t for t in bc.TEXT_KINDS if o.name.startswith(t.name) and t.text), None)
        if kind is not None:
            assert kind.text.split(",")[0] in str(rows[os.path.realpath(o.files[0])]), o.name  # tags are split
    notes = "\n".join(report.live_notes())
    if any(o.name == "eight_channels" for o in offers):  # every layout with the audio kinds
        assert re.search(r"eight_channels\.(mix\.)?wav: 8 channels mixed down to [12]\n", notes + "\n")
    if any(o.name == "half_mp3" for o in offers):
        assert re.search(r"half_mp3\.mp3: ends early \(truncated\?\): 1\.\d s decoded of the 4\.0 s", notes)
    # the count identity, and the figures the note reports
    n_used = sum(o.expect == bc.USED for o in offers)
    assert report.usable == len(items) == n_used
    assert len(report.skipped) == len(offers) - n_used
    assert report.usable + len(report.skipped) == len(offers)
    # every reason is one line, and the rendered report names every skipped file
    text = report.render()
    assert text.splitlines()[0].endswith(f"{report.usable} usable, {len(report.skipped)} skipped")
    for s in report.skipped:
        assert "\n" not in s.reason and "Traceback" not in s.reason and len(s.reason) < 400
        assert f"SKIPPED {s.path}: {s.reason}" in text
    # the report is saved whatever the file names hold (not-UTF-8 names are escaped), and says the same
    import json

    saved = json.loads(report.save(tmp_path / "run")[1].read_text(encoding="utf-8"))
    assert saved["usable"] == report.usable and len(saved["skipped"]) == len(report.skipped)



@pytest.mark.parametrize("make", [lambda: TranscriptList(text_field="text", speaker_field="speaker"),
                                  lambda: registry.get("valle").readers()[0]], ids=["kit", "valle"])
def test_a_utf16_list_is_read_whole(make, tmp_path):
    """A train.txt saved as UTF-16 with its BOM (Windows Notepad's "Unicode"), CRLF lines: recognised, every line used."""
    reader = make()
    listfile, offers = bc.utf16_list(tmp_path / "voice")
    assert reader.matches(tmp_path / "voice") and reader.matches(listfile)
    report = BadInputReport()
    rows = reader.read(tmp_path / "voice", report).rows
    assert not report.skipped
    assert [(Path(r["audio_path"]).name, r["text"]) for r in rows] == [
        (f"clip{i}.wav", f"{bc.GOOD_TEXT} {i}") for i in range(len(offers))]


def test_an_hour_is_never_decoded_whole_and_a_cut_is_said(tmp_path):
    """decode reads at most max_seconds (the hour of silence costs 5 s of samples) and says what it left out."""
    from audiotrain.data.audio_io import decode, load_audio

    notes: list[str] = []
    audio, sr = decode(bc.silent_hour(tmp_path / "hour.wav"), max_seconds=5.0, notes=notes)
    assert (audio.shape, sr) == ((1, 40000), 8000)
    assert notes == ["3600 s long: only its first 5 s are used (dataset.max_duration)"]
    long_tone = bc.tone(tmp_path / "long.flac", seconds=12.0)
    notes = []
    audio, length = load_audio(long_tone, AudioSpec(sample_rate=16000, channels=1, min_duration=0, max_duration=10),
                               notes)
    assert audio.shape == (1, 160000) and length == 160000
    assert notes == ["12 s long: only its first 10 s are used (dataset.max_duration)"]


def test_eight_channels_are_mixed_not_cut(tmp_path):
    """7.1 to stereo: the centre goes to both sides (-3 dB), the LFE is dropped, surround sides go to their side;
    the mix is normalised so it never clips. (Keeping the first two channels would lose the centre: the vocals.)"""
    import numpy as np

    from audiotrain.data.audio_io import to_channels

    one = np.ones(4, np.float32)
    centre_only = np.stack([one * (c == 2) for c in range(8)])
    lfe_only = np.stack([one * (c == 3) for c in range(8)])
    left_side = np.stack([one * (c in (0, 4, 6)) for c in range(8)])
    wl = 1.0 + 3 * 0.7071
    np.testing.assert_allclose(to_channels(centre_only, 2), np.stack([one * 0.7071 / wl] * 2), rtol=1e-5)
    np.testing.assert_allclose(to_channels(lfe_only, 2), np.zeros((2, 4)))
    np.testing.assert_allclose(to_channels(left_side, 2)[:, 0], [(1 + 2 * 0.7071) / wl, 0.0], rtol=1e-5)
    full = np.ones((8, 4), np.float32)
    assert to_channels(full, 2).max() <= 1.0 + 1e-6 and to_channels(full, 1).shape == (1, 4)


def test_a_clip_padding_would_turn_to_silence_is_too_short(tmp_path):
    """ACE-Step pads short songs to dataset.min_duration: 0.1 s padded to 3 s would be 97% silence, so it is skipped;
    0.2 s (93%) is kept."""
    from audiotrain.data.audio_io import AudioError, load_audio

    spec = AudioSpec(sample_rate=16000, channels=1, min_duration=3.0, max_duration=10.0)
    with pytest.raises(AudioError, match=r"^too short: 0\.10 s, padded to dataset\.min_duration=3 s it would be more "
                                         r"than 95% silence$"):
        load_audio(bc.tone(tmp_path / "a.wav", seconds=0.1), spec)
    audio, length = load_audio(bc.tone(tmp_path / "b.wav", seconds=0.2), spec)
    assert audio.shape == (1, 48000) and length == 3200


#: the kinds that reach the frozen encoders (kept, but unusual) and a few that must not
THROUGH_ENCODERS = {"good_wav", "wav_named_mp3", "half_flac", "eight_channels", "rate_8k", "utf16_text",
                    "nan_samples", "empty_mp3", "latin1_text"}


@pytest.mark.parametrize("plugin_name", sorted(n for n, p in registry.discover().items()
                                               if any(isinstance(r, SidecarFolder) for r in p.readers())))
def test_load_data_runs_the_encoders_on_what_the_corpus_keeps(plugin_name, tmp_path):
    """The whole data path of a run (``load_data``: read, decode, the tiny preset's frozen encoders into the cache,
    the plugin's filters, the saved report) on part of the corpus, a not-UTF-8 file name included: the kept files
    are encoded, the others reported, and the saved report adds up."""
    import json

    from tests.conftest import compose
    from audiotrain.train.data_setup import load_data

    plugin = registry.get(plugin_name)
    reader = next(r for r in plugin.readers() if isinstance(r, SidecarFolder))
    root = tmp_path.resolve() / "data"
    offers = bc.sidecar_folder(root, reader.sidecars, only=THROUGH_ENCODERS)
    cfg = compose([f"model={plugin_name}", f"data={root}", "model.preset=tiny", "tracking=none",
                   "dataset.num_workers=0", "trainer.accelerator=cpu", f"cache_dir={tmp_path / 'cache'}",
                   f"paths.log_dir={tmp_path / 'logs'}", f"paths.run_dir={tmp_path / 'logs' / 'run'}"])
    data = load_data(cfg, plugin, tmp_path / "run", "cpu")
    used = sorted(o.name for o in offers if o.expect == bc.USED)
    assert len(data.train) == data.report.usable == len(used)
    assert len(data.report.skipped) == len(offers) - len(used)
    assert any(it.row["key"].endswith("caf\\xe9_name") for it in data.train.items)  # the latin-1 name, printable
    saved = json.loads((tmp_path / "run" / "bad_inputs.json").read_text(encoding="utf-8"))
    assert saved["usable"] + len(saved["skipped"]) == len(offers)
    print(plugin_name, len(offers), used)
