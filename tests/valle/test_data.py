"""VALL-E data side: voice-folder and list readers, espeak-ng phonemes + symmap, the EnCodec tokenizer.

The speech clips are synthesised here with ``espeak-ng -w`` (22.05 kHz mono wav); the core resamples them.
"""
from __future__ import annotations

import math
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiotrain.data.audio_io import AudioSpec, decode, resample
from audiotrain.data.prepare import prepare_items
from audiotrain.data.report import BadInputReport
from audiotrain.errors import UserError
from audiotrain_valle import phonemes as ph
from audiotrain_valle.codec import Codec, dir_key, tiny_key
from audiotrain_valle.features import CodecFeature, PhonemeFeature
from audiotrain_valle.readers import LJSpeechList, VoiceFolder

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")
SPEC = AudioSpec(sample_rate=24000, channels=1, min_duration=0.5, max_duration=20.0)


def speak(path: Path, text: str) -> Path:
    """A real speech clip: espeak-ng's wav, re-encoded by soundfile when ``path`` is .flac/.mp3."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = path if path.suffix == ".wav" else path.parent / f".{path.name}.espeak.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    if path.suffix != ".wav":
        data, sr = sf.read(str(wav), dtype="float32")
        sf.write(str(path), data, sr)
        wav.unlink()
    return path


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> Path:
    """alice (wav + flac), bob (good, untranscribed, empty transcript, orphan transcript, corrupt wav),
    carol (latin-1 transcript, and a same-name mp3 duplicate), one clip in the root."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("voices")
    speak(root / "alice" / "a1.wav", "Hello there, this is Alice.")
    write(root / "alice" / "a1.txt", "Hello there,\nthis is Alice.\n")
    speak(root / "alice" / "a2.flac", "The quick brown fox.")
    write(root / "alice" / "a2.txt", "\ufeffThe quick brown fox.")
    speak(root / "bob" / "b1.wav", "Good morning.")
    write(root / "bob" / "b1.txt", "Good morning.")
    speak(root / "bob" / "b2.wav", "Nobody wrote this down.")
    speak(root / "bob" / "b3.wav", "Empty.")
    write(root / "bob" / "b3.txt", "  \n")
    write(root / "bob" / "b4.txt", "A transcript with no clip.")
    write(root / "bob" / "broken.wav", b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 8)
    write(root / "bob" / "broken.txt", "This file is corrupt.")
    speak(root / "carol" / "c1.wav", "Bonjour.")
    write(root / "carol" / "c1.txt", "Caf\xe9 cr\xe8me".encode("latin-1"))
    speak(root / "carol" / "c2.wav", "Two formats.")
    speak(root / "carol" / "c2.mp3", "Two formats.")
    write(root / "carol" / "c2.txt", "Two formats.")
    speak(root / "r1.wav", "A clip in the root.")
    write(root / "r1.txt", "A clip in the root.")
    write(root / ".hidden" / "x.txt", "ignored")
    return root


def reasons(report: BadInputReport) -> dict[str, str]:
    return {Path(s.path).name: s.reason for s in report.skipped}


def test_voice_folder_rows_speakers_and_report(voices):
    reader = VoiceFolder(language="en-us")
    assert reader.matches(voices) and not LJSpeechList().matches(voices)
    report = BadInputReport()
    rows = {r["key"]: r for r in reader.read(voices, report).rows}
    root = voices.name
    assert sorted(rows) == ["alice/a1", "alice/a2", "bob/b1", "bob/broken", "carol/c2", f"{root}/r1"]
    assert rows["alice/a1"]["text"] == "Hello there, this is Alice."   # newlines collapsed
    assert rows["alice/a2"]["text"] == "The quick brown fox."          # BOM dropped
    assert rows["alice/a2"]["audio_path"] == str(voices / "alice" / "a2.flac")
    assert rows[f"{root}/r1"]["speaker"] == root
    assert {r["speaker"] for r in rows.values()} == {"alice", "bob", "carol", root}
    assert {r["language"] for r in rows.values()} == {"en-us"}
    got = reasons(report)
    assert set(got) == {"b2.wav", "b3.txt", "b4.txt", "c1.txt", "c2.wav"}
    assert "no transcript" in got["b2.wav"] and "b2.txt" in got["b2.wav"]
    assert "empty" in got["b3.txt"]
    assert "without a clip" in got["b4.txt"]
    assert "UTF-8" in got["c1.txt"]
    assert "c2.mp3" in got["c2.wav"]   # same name, another format: the first (sorted) one wins

    # the reader decodes nothing; the core skips the corrupt clip with its reason
    manifest = reader.read(voices, BadInputReport())
    report2 = BadInputReport()
    items = prepare_items(manifest, None, SPEC, [], None, report2)
    assert len(items) == 5
    assert [Path(s.path).name for s in report2.skipped] == ["broken.wav"]
    assert "corrupt" in report2.skipped[0].reason
    assert all(0.5 < it.duration < 3.0 for it in items)


@needs_espeak
def test_train_txt_lines_speakers_and_line_numbers(tmp_path):
    speak(tmp_path / "clips" / "one.wav", "One.")
    speak(tmp_path / "clips" / "two.wav", "Two.")
    speak(tmp_path / "three.flac", "Three.")
    lines = ["clips/one.wav|First line.",            # 1
             "clips/two.wav|Second line.|dave",       # 2
             "",                                      # 3 blank: ignored
             "clips/one.wav",                         # 4 one field
             "clips/two.wav|a|b|c",                   # 5 four fields
             "clips/missing.wav|Not there.",          # 6
             "three.flac|   ",                        # 7 empty text
             "three.flac|Third   line.",              # 8
             "clips/one.wav|Again."]                  # 9 repeat
    write(tmp_path / "train.txt", "\n".join(lines) + "\n")
    reader = LJSpeechList()
    assert reader.matches(tmp_path) and reader.matches(tmp_path / "train.txt")
    assert not VoiceFolder().matches(tmp_path)
    report = BadInputReport()
    manifest = reader.read(tmp_path, report)
    rows = {r["key"]: r for r in manifest.rows}
    folder = tmp_path.name
    assert sorted(rows) == sorted([f"{folder}/clips/one", f"{folder}/three", "dave/clips/two"])
    assert rows["dave/clips/two"]["speaker"] == "dave"
    assert rows[f"{folder}/three"]["text"] == "Third line."
    assert rows[f"{folder}/clips/one"]["audio_path"] == str((tmp_path / "clips" / "one.wav").resolve())
    got = [s.reason for s in report.skipped]
    assert [r.split(":")[0] for r in got] == ["line 4", "line 5", "line 6", "line 7", "line 9"]
    assert "got 1 field" in got[0] and "got 4 field" in got[1]
    assert "missing.wav not found" in got[2] and "empty" in got[3] and "line 1" in got[4]
    assert {s.path for s in report.skipped} == {str((tmp_path / "train.txt").resolve())}


@needs_espeak
def test_ljspeech_metadata_csv(tmp_path):
    lj = tmp_path / "LJSpeech-1.1"
    speak(lj / "wavs" / "LJ001-0001.wav", "Printing, in the only sense.")
    speak(lj / "wavs" / "LJ001-0002.wav", "In being comparatively modern.")
    write(lj / "metadata.csv", "LJ001-0001|Printing, in the only sense|Printing, in the only sense.\n"
                               "LJ001-0002|in being comparatively modern.|\n"
                               "LJ001-0003|No audio for this one.|No audio for this one.\n"
                               "LJ001-0004\n")
    report = BadInputReport()
    rows = LJSpeechList(language="en-gb").read(lj, report).rows
    assert [r["key"] for r in rows] == ["LJSpeech-1.1/wavs/LJ001-0001", "LJSpeech-1.1/wavs/LJ001-0002"]
    assert rows[0]["text"] == "Printing, in the only sense."   # the normalized column
    assert rows[1]["text"] == "in being comparatively modern."  # empty normalized → the text column
    assert {r["speaker"] for r in rows} == {"LJSpeech-1.1"} and rows[0]["language"] == "en-gb"
    got = [s.reason for s in report.skipped]
    assert got[0].startswith("line 3:") and "wavs/LJ001-0003.wav not found" in got[0]
    assert got[1].startswith("line 4:") and "id|text|normalized" in got[1]


@needs_espeak
def test_phonemize_hello_world():
    ipa = ph.Phonemizer().phonemize("Hello world.")
    assert ipa == "həlˈoʊ wˈɜːld."
    symmap = ph.Symmap.builtin()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ph.UnknownPhonemeWarning)
        ids = symmap.encode(ipa)
    assert ids[0] == 1 and ids[-1] == 2 and len(ids) == len(ipa) + 2
    assert 0 not in ids and max(ids) < 256
    assert symmap.decode(ids) == ipa

    feat = PhonemeFeature()
    long_text = ("The quick brown fox jumps over the lazy dog; isn't it nice? \"Yes!\" she said — "
                 "thirty-three thousand measures of pleasure, rhythm, church and little water… (really).")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ph.UnknownPhonemeWarning)
        phns = feat.encode({"text": long_text, "language": "en-us"})["phns"]
    assert phns.dtype == torch.long and phns.dim() == 1 and len(phns) > 80
    assert phns[0] == 1 and phns[-1] == 2 and int((phns == 0).sum()) == 0
    assert ph.Phonemizer("fr").phonemize("Bonjour") == "bɔ̃ʒˈuʁ"


def test_language_coercions_and_ids():
    assert ph.coerce_language("en") == "en-us" and ph.coerce_language("FR") == "fr-fr"
    assert ph.coerce_language("en_GB") == "en-gb" and ph.coerce_language("zh-CN") == "cmn-latn-pinyin"
    assert [ph.language_id(c) for c in ("en-us", "ja", "de", "fr-fr", "zh", "ko")] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(UserError, match="no VALL-E language id"):
        ph.language_id("es")


def test_symmap_builtin_is_fixed_and_replaceable():
    a, b = ph.Symmap.builtin(), ph.Symmap.builtin()
    assert a.to_dict() == b.to_dict() and a.cache_key() == b.cache_key()
    d = a.to_dict()
    assert [d[s] for s in ("<unk>", "<bos>", "</eos>", "<mask>", " ")] == [0, 1, 2, 3, 4]
    assert len(d) == len(set(d.values())) == 4 + len(ph.IPA_INVENTORY) and a.size <= 256
    with pytest.warns(ph.UnknownPhonemeWarning, match="2 phoneme symbol"):
        assert a.encode("a☃b☃") == [1, d["a"], 0, d["b"], 0, 2]
    assert a.unknown == {"☃": 2}
    # a checkpoint's symmap: older special spellings, multi-character symbols, JSON string form
    ckpt = ph.Symmap.from_dict('{"<s>": 1, "</s>": 2, "_": 0, "aɪ": 7, "a": 5, "ɪ": 6, " ": 3}')
    assert ckpt.encode("aɪ a ɪ") == [1, 7, 3, 5, 3, 6, 2]
    assert ckpt.cache_key() != a.cache_key() and ckpt.size == 8
    with pytest.raises(UserError):
        ph.Symmap.from_dict({"a": -1})


def test_missing_espeak_is_one_sentence(monkeypatch):
    from phonemizer.backend.espeak.wrapper import EspeakWrapper

    def no_library(cls):
        raise RuntimeError("failed to find espeak library")

    monkeypatch.setattr(EspeakWrapper, "library", classmethod(no_library))
    feat = PhonemeFeature()
    key = feat.cache_key()  # known without espeak, so a cached dataset still trains
    with pytest.raises(UserError) as err:
        feat.encode({"text": "Hello world."})
    msg = str(err.value)
    assert msg == ph.ESPEAK_MISSING
    assert "apt-get install espeak-ng" in msg and "brew install espeak-ng" in msg and "Windows" in msg
    assert msg.count(". ") == 0 and "Traceback" not in msg
    assert PhonemeFeature().cache_key() == key


@pytest.fixture(scope="module")
def speech24k(tmp_path_factory) -> torch.Tensor:
    """A 3 s real speech clip at 24 kHz (espeak-ng, resampled by the core's resampler)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = speak(tmp_path_factory.mktemp("speech") / "s.wav",
                "This is a short sentence, spoken for the codec test, lasting about three seconds.")
    audio, sr = decode(wav)
    audio = resample(audio, sr, 24000)[0, :72001]
    return torch.from_numpy(np.ascontiguousarray(audio))


def test_tiny_codec_shapes_and_values(speech24k):
    codec = Codec.tiny()
    assert (codec.sample_rate, codec.levels, codec.codebook_size, codec.frame_rate) == (24000, 8, 64, 75.0)
    assert codec.hop_length == 320 and codec.bandwidth == pytest.approx(3.6)
    n = speech24k.numel()
    codes = codec.encode(speech24k)
    assert codes.dtype == torch.long and codes.shape == (math.ceil(n / 320), 8) == (226, 8)
    assert codec.num_frames(n) == 226 and int(codes.min()) >= 0 and int(codes.max()) < 64
    assert all(codes[:, level].unique().numel() > 4 for level in range(8))  # real speech, seeded codebooks
    wav = codec.decode(codes)
    assert wav.dtype == torch.float32 and wav.shape == (226 * 320,) and torch.isfinite(wav).all()
    assert torch.equal(Codec.tiny().encode(speech24k), codes)  # same seed, same codes

    feat = CodecFeature(codec)
    padded = torch.cat([speech24k, torch.zeros(24000)])[None]  # the core pads short clips; the real length wins
    out = feat.encode({"audio": padded, "audio_length": n})["codes"]
    assert torch.equal(out, codes) and int(out.max()) <= torch.iinfo(torch.int16).max
    assert feat.encode({"audio": padded})["codes"].shape == (math.ceil((n + 24000) / 320), 8)


def test_codec_from_dir_round_trip_and_keys(speech24k, tmp_path):
    codec = Codec.tiny()
    codec.model.save_pretrained(str(tmp_path / "encodec"))
    loaded = Codec.from_dir(tmp_path / "encodec")
    assert torch.equal(loaded.encode(speech24k), codec.encode(speech24k))
    assert loaded.cache_key() == dir_key(tmp_path / "encodec") == Codec.from_dir(tmp_path / "encodec").cache_key()
    keys = {codec.cache_key(), tiny_key(seed=1), tiny_key(levels=4), loaded.cache_key()}
    assert len(keys) == 4 and Codec.tiny().cache_key() == codec.cache_key() == tiny_key()
    assert Codec.tiny(levels=4).encode(speech24k[:3200]).shape == (10, 4)
    assert CodecFeature(codec).cache_key() == CodecFeature(Codec.tiny()).cache_key() != CodecFeature(loaded).cache_key()
    with pytest.raises(UserError, match=r"codec\.path=.*config\.json"):
        Codec.from_dir(tmp_path / "empty")


def test_phoneme_feature_keys():
    base = PhonemeFeature().cache_key()
    assert PhonemeFeature().cache_key() == base
    assert PhonemeFeature(language="fr").cache_key() != base
    custom = ph.Symmap.from_dict({**ph.Symmap.builtin().to_dict(), "ʧ": 250})
    assert PhonemeFeature(symmap=custom).cache_key() != base


def test_transcript_named_train_txt_is_not_a_list(tmp_path):
    write(tmp_path / "train.wav", b"not decoded by the reader")
    write(tmp_path / "train.txt", "Just a transcript, no pipes.")
    assert VoiceFolder().matches(tmp_path) and not LJSpeechList().matches(tmp_path)
    rows = VoiceFolder().read(tmp_path, BadInputReport()).rows
    assert [(r["key"], r["speaker"]) for r in rows] == [(f"{tmp_path.name}/train", tmp_path.name)]
