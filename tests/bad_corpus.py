"""A corpus of bad input files, written in each reader's own layout, for the "every file is used or reported" tests.

Every file kind is a :class:`Kind`: a file name, a writer, and its expected fate — ``USED``, or a regular
expression the bad-input report's reason must match. The layout writers (``sidecar_folder`` for any
``SidecarFolder`` from its sidecars — ACE-Step's song folder, VALL-E's voice folder, the kit's —, ``transcript_list``
and ``utf16_list``, ``hf_dataset``, ``stem_folder``) put every kind into a folder the way that reader expects it and
return the :class:`Offer` list: one offer per example the reader is given (an audio
file of a folder, a text file no audio claims, a non-empty line of a list, a row of a dataset), each with the
files it is made of and its expected fate. A test then checks ``usable + skipped == len(offers)`` and each
offer's fate. Everything is small and fast: the hour of silence is a sparse WAV (a header, then a hole).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

USED = "used"
SR = 16000
SECONDS = 4.0  # inside every plugin's bounds, halves too (VALL-E's duration_range is [1, 12] s)
HUGE = 10 * 1024 * 1024  # bytes of the huge text


@dataclass(frozen=True)
class Kind:
    name: str                          # the file's stem (unique in a corpus)
    ext: str                           # ".wav", ".mp3", ...
    write: Callable[[Path], None]
    expect: str = USED                 # USED, or a regex of the report's reason
    wav_only: bool = False             # readers that only glob *.wav still see it


@dataclass
class Offer:
    """One example the reader is given and what must become of it."""

    name: str
    expect: str
    files: list[Path] = field(default_factory=list)  # the audio first, then its text files
    line: int | None = None                          # a list's line number
    row: int | None = None                           # a dataset's row index


# --- audio writers -------------------------------------------------------------------------------------------

def _signal(seconds: float = SECONDS, sr: int = SR, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    tone = 0.3 * np.sin(2 * np.pi * 220.0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))
    return np.stack([tone * (1.0 - 0.05 * c) for c in range(channels)], axis=1).astype(np.float32)


def tone(path: Path, seconds: float = SECONDS, sr: int = SR, channels: int = 1, fmt: str | None = None,
         subtype: str | None = None) -> Path:
    """A real (non-silent) tone; the format follows the extension unless ``fmt`` says otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(os.fsencode(path), _signal(seconds, sr, channels), sr, format=fmt, subtype=subtype)
    return path


def _bytes_of(ext: str) -> bytes:
    """A good file's bytes in the format of ``ext`` (written to memory)."""
    import io

    buf = io.BytesIO()
    sf.write(buf, _signal(), SR, format={".wav": "WAV", ".flac": "FLAC", ".mp3": "MP3"}[ext])
    return buf.getvalue()


def _write_bytes(data: bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return write


def _truncated(ext: str, keep: float | int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        data = _bytes_of(ext)
        _write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])(path)
    return write


def _float_wav(values: float) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        audio = _signal()
        audio[SR // 2: SR // 2 + 10] = values
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), audio, SR, subtype="FLOAT")
    return write


def silent_hour(path: Path, sr: int = 8000) -> Path:
    """An hour of 16-bit mono silence: a WAV header, then a sparse hole (57.6 MB on paper, nothing on disk)."""
    frames = 3600 * sr
    size = frames * 2
    header = (b"RIFF" + struct.pack("<I", 36 + size) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sr,
              sr * 2, 2, 16) + b"data" + struct.pack("<I", size))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + size)
    return path


def _symlink_loop(path: Path) -> None:
    """``path`` → ``<stem>_other<ext>`` → ``path``: opening either fails with ELOOP."""
    path.parent.mkdir(parents=True, exist_ok=True)
    other = path.with_name(f"{path.stem}_other.link")
    os.symlink(other.name, path)
    os.symlink(path.name, other)


def _fifo(path: Path) -> None:
    """A named pipe: opening it for reading would wait for a writer forever."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


def _dangling(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink("no_such_file.wav", path)


EMPTY = r"^the file is empty \(0 bytes\)"
CORRUPT = r"^cannot decode audio: the \.\w+ file is corrupt, truncated or not audio"

# The fates, as a demanding user expects them: a file that holds usable audio is used — a WAV named .mp3 (the
# content decides), 8 channels (mixed down), 8 kHz (resampled), a truncated MP3/FLAC/WAV (the part before the cut,
# with a note); everything else is reported with why: empty, corrupt or header only, not audio, a format that is
# not read (.m4a), one sample, NaN/Inf samples, an hour of silence (the silence rule, reading only max_duration
# of it), a link loop, a link to nothing, a named pipe.
AUDIO_KINDS: list[Kind] = [
    Kind("good_wav", ".wav", lambda p: tone(p), wav_only=True),
    Kind("good_flac", ".flac", lambda p: tone(p)),
    Kind("good_mp3", ".mp3", lambda p: tone(p)),
    Kind("empty_wav", ".wav", _write_bytes(b""), EMPTY, wav_only=True),
    Kind("empty_flac", ".flac", _write_bytes(b""), EMPTY),
    Kind("empty_mp3", ".mp3", _write_bytes(b""), EMPTY),
    Kind("header_only_wav", ".wav", _truncated(".wav", 30), CORRUPT, wav_only=True),
    Kind("header_only_flac", ".flac", _truncated(".flac", 30), CORRUPT),
    Kind("header_only_mp3", ".mp3", _truncated(".mp3", 30), CORRUPT),
    # cut in half: what is there decodes (a shorter clip), as every player plays it
    Kind("half_wav", ".wav", _truncated(".wav", 0.5), wav_only=True),
    Kind("half_flac", ".flac", _truncated(".flac", 0.5)),
    Kind("half_mp3", ".mp3", _truncated(".mp3", 0.5)),
    Kind("wav_named_mp3", ".mp3", _write_bytes(b"")),  # replaced below (needs the WAV bytes)
    Kind("text_named_wav", ".wav", _write_bytes(b"This is a text file, not audio.\n" * 20), CORRUPT, wav_only=True),
    # readable bytes (a WAV of its own length: equal bytes would share another file's decoding) in a format not read
    Kind("aac_named_m4a", ".m4a", lambda p: tone(p, seconds=3.0, fmt="WAV"),
         r"\.m4a is not an audio format audiotrain reads \(\.mp3/\.wav/\.flac/\.ogg/\.opus\): convert it"),
    Kind("one_sample", ".wav", lambda p: tone(p, seconds=1 / SR), r"^too short: 1 sample", wav_only=True),
    Kind("nan_samples", ".wav", _float_wav(float("nan")), r"contains NaN or infinite samples", wav_only=True),
    Kind("inf_samples", ".wav", _float_wav(float("inf")), r"contains NaN or infinite samples", wav_only=True),
    Kind("eight_channels", ".wav", lambda p: tone(p, channels=8), wav_only=True),
    Kind("rate_8k", ".wav", lambda p: tone(p, sr=8000), wav_only=True),
    Kind("hour_of_silence", ".wav", silent_hour, r"^silent \(", wav_only=True),
    Kind("symlink_loop", ".wav", _symlink_loop, r"symbolic link loop", wav_only=True),
    Kind("dangling_link", ".wav", _dangling, r"points to no file", wav_only=True),
    Kind("named_pipe", ".wav", _fifo, r"audio file \S*named_pipe\.(mix\.)?wav is not a regular file", wav_only=True),
]
AUDIO_KINDS[[k.name for k in AUDIO_KINDS].index("wav_named_mp3")] = Kind(
    "wav_named_mp3", ".mp3", lambda p: _write_bytes(_bytes_of(".wav"))(p))

# --- text kinds: the content of a clip's main text file (prompt, transcript) --------------------------------

@dataclass(frozen=True)
class TextKind:
    name: str
    data: Callable[[], bytes]
    expect: str = USED
    text: str | None = None  # the decoded text a used file must give


GOOD_TEXT = "hello there, piano"
DECODED = "\u00fcber caf\u00e9, piano"  # what a used text kind holds: non-ASCII, so a wrong decoding shows
# UTF-16/UTF-8 with a BOM: decoded and used; latin-1: reported (naming the byte), never guessed; 10 MB: reported.
TEXT_KINDS: list[TextKind] = [
    TextKind("utf16_text", lambda: DECODED.encode("utf-16"), text=DECODED),            # LE with its BOM
    TextKind("utf16be_text", lambda: b"\xfe\xff" + DECODED.encode("utf-16-be"), text=DECODED),
    TextKind("utf8_bom_text", lambda: b"\xef\xbb\xbf" + DECODED.encode(), text=DECODED),
    TextKind("latin1_text", lambda: "caf\xe9 na\xefve, piano".encode("latin-1"),
             r"is not UTF-8 text \(byte 0xe9 at offset 3\)"),
    TextKind("huge_text", lambda: b"la " * (HUGE // 3), r"is 10\.0 MB of text"),
]


# --- layouts ---------------------------------------------------------------------------------------------------

def sidecar_folder(root: Path, sidecars, only: set[str] | None = None) -> list[Offer]:
    """Any :class:`~audiotrain.data.readers.sidecar_folder.SidecarFolder` layout from its ``sidecars`` (ACE-Step's
    ``X.mp3`` + ``X_prompt.txt`` [+ ``X_lyrics.txt``], VALL-E's ``spk/X.wav`` + ``spk/X.txt``, ...), in one sub-folder
    (one speaker): every audio kind with good text files, every text kind as each text file, a duplicate stem, an
    orphan text file; plus a folder named like audio and a folder link loop (no files: nothing to offer). ``only``:
    just the audio and text kinds of these names (the rest is always written)."""
    folder = root / "spk"
    folder.mkdir(parents=True, exist_ok=True)
    main = next((sc.suffix for sc in sidecars if sc.required), sidecars[0].suffix)  # all optional: the first
    offers: list[Offer] = []

    def texts(stem: str, override: dict[str, bytes] | None = None) -> list[Path]:
        files = {sc.suffix: GOOD_TEXT.encode() for sc in sidecars}
        out = []
        for suffix, data in {**files, **(override or {})}.items():
            p = folder / f"{stem}{suffix}"
            p.write_bytes(data)
            out.append(p)
        return out

    for k in AUDIO_KINDS:
        if only is not None and k.name not in only:
            continue
        audio = folder / f"{k.name}{k.ext}"
        k.write(audio)
        offers.append(Offer(k.name, k.expect, [audio, *texts(k.name)]))
    for sc in sidecars:
        for t in TEXT_KINDS:
            if only is not None and t.name not in only:
                continue
            stem = f"{t.name}_as_{sc.field}"
            audio = tone(folder / f"{stem}.wav")
            offers.append(Offer(stem, t.expect, [audio, *texts(stem, {sc.suffix: t.data()})]))
    # a file name that is not UTF-8 (latin-1 bytes, as an old archive unpacks): read, and the report can be saved
    stem = os.fsdecode(b"caf\xe9_name")
    offers.append(Offer("latin1_name", USED, [tone(folder / f"{stem}.wav"), *texts(stem)]))
    empty = folder / os.fsdecode(b"caf\xe9_empty.wav")
    empty.write_bytes(b"")
    offers.append(Offer("latin1_name_empty", EMPTY, [empty, *texts(empty.stem)]))
    # two audio files of one name: the first in sorted order (.flac) is used, the other reported
    dup_flac, dup_wav = tone(folder / "duplicate.flac"), tone(folder / "duplicate.wav")
    offers.append(Offer("duplicate.flac", USED, [dup_flac, *texts("duplicate")]))
    offers.append(Offer("duplicate.wav", r"^duplicate of duplicate\.flac", [dup_wav]))
    orphan = folder / f"orphan{main}"
    orphan.write_text(GOOD_TEXT, encoding="utf-8")
    offers.append(Offer("orphan", r"file without audio: no audio file named orphan", [orphan]))
    (folder / "a_folder.wav").mkdir()
    os.symlink(".", folder / "loop_dir")
    return offers


def transcript_list(root: Path, name: str = "train.txt") -> tuple[Path, list[Offer]]:
    """A ``path|text|speaker`` list (one speaker) with every audio kind under ``wavs/`` and every bad row kind."""
    root.mkdir(parents=True, exist_ok=True)
    wavs = root / "wavs"
    lines: list[bytes] = []
    offers: list[Offer] = []

    def line(data: bytes, name: str, expect: str, files: list[Path]) -> None:
        lines.append(data)
        offers.append(Offer(name, expect, files, line=len(lines)))

    for k in AUDIO_KINDS:
        audio = wavs / f"{k.name}{k.ext}"
        k.write(audio)
        line(f"wavs/{audio.name}|{GOOD_TEXT}|spk".encode(), k.name, k.expect, [audio])
    for t in TEXT_KINDS:
        if t.name.startswith(("utf16", "utf8_bom")):
            continue  # a whole-file encoding: see utf16_list
        audio = tone(wavs / f"{t.name}.wav")
        data = t.data()
        expect = r"^line \d+: is not UTF-8 text" if t.name == "latin1_text" else r"^line \d+: is 10\.0 MB long"
        line(b"wavs/" + audio.name.encode() + b"|" + data + b"|spk", t.name, expect, [audio])
    line(b"wavs/missing.wav|" + GOOD_TEXT.encode() + b"|spk", "missing", r"audio file wavs/missing\.wav not found", [])
    (wavs / "a_folder.wav").mkdir()
    line(b"wavs/a_folder.wav|" + GOOD_TEXT.encode() + b"|spk", "directory", r"wavs/a_folder\.wav is a folder", [])
    line(b"wavs/good_wav.wav|another text|spk", "repeat", r"repeats the clip of line 1", [])
    line(b"wavs/good_flac.flac|too|many|fields|here", "fields", r"expected path\|text", [])
    line(b"wavs/good_mp3.mp3| |spk", "empty_text", r"the transcript is empty", [])
    listfile = root / name
    listfile.write_bytes(b"\n".join(lines) + b"\n\n")
    return listfile, offers


def song_metadata(root: Path, name: str = "metadata.jsonl") -> tuple[Path, list[Offer]]:
    """A SongGen metadata ``.jsonl`` (one JSON object a line, paths relative to its folder) with every audio kind
    under ``audio/`` as a song's mix, stems good and bad, and every bad line kind."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    audio_dir = root / "audio"
    lines: list[bytes] = []
    offers: list[Offer] = []

    def line(obj, name: str, expect: str, files: list[Path]) -> None:
        lines.append(obj if isinstance(obj, bytes) else json.dumps(obj, ensure_ascii=False).encode())
        offers.append(Offer(name, expect, files, line=len(lines)))

    def song(fname: str, audio: str, **more) -> dict:
        return {"fname": fname, "caption": GOOD_TEXT, "lyrics": "[verse] la la la", "audio_file_name": audio, **more}

    for k in AUDIO_KINDS:
        audio = audio_dir / f"{k.name}{k.ext}"
        k.write(audio)
        line(song(k.name, f"audio/{audio.name}"), k.name, k.expect, [audio])
    # stems: a good vocal and accompaniment are read beside the mix; a corrupt stem costs its song, named by its role
    mix, vocal, acc = (tone(audio_dir / f"stems{s}.wav") for s in ("", "_vocal", "_acc"))
    line(song("stems", "audio/stems.wav", vocal_file_name="audio/stems_vocal.wav",
              acc_file_name="audio/stems_acc.wav"), "stems", USED, [mix, vocal, acc])
    mix, bad = tone(audio_dir / "bad_stem.wav"), audio_dir / "bad_stem_vocal.wav"
    bad.write_bytes(b"This is a text file, not audio.\n" * 20)
    line(song("bad_stem", "audio/bad_stem.wav", vocal_file_name="audio/bad_stem_vocal.wav"), "bad_stem",
         r"^vocal stream: cannot decode audio", [mix, bad])
    good = tone(audio_dir / "lines.wav")
    line(song("missing", "audio/missing.wav"), "missing", r"audio file audio/missing\.wav not found \(relative", [])
    (audio_dir / "a_folder.wav").mkdir()
    line(song("directory", "audio/a_folder.wav"), "directory", r"audio/a_folder\.wav is a folder", [])
    line(song("missing_stem", "audio/lines.wav", acc_file_name="audio/gone_acc.wav"), "missing_stem",
         r"acc file audio/gone_acc\.wav not found", [])
    line(song("good_wav", "audio/lines.wav"), "repeat", r"repeats the song 'good_wav' of line 1", [])
    line(b'{"fname": "cut", "caption": "a pop song", ', "bad_json", r"not a JSON object", [])
    line(b"[1, 2, 3]", "json_list", r"a JSON list, not an object", [])
    line({"fname": "no_caption", "audio_file_name": "audio/lines.wav"}, "no_caption", r"no caption", [])
    line(song("long_caption", "audio/lines.wav", caption="a pop song " * 60), "long_caption",
         r"the description is 659 characters long", [])
    line(song("list_lyrics", "audio/lines.wav", lyrics=["la", "la"]), "list_lyrics", r'"lyrics" is a list', [])
    line({"fname": "no_audio", "caption": GOOD_TEXT}, "no_audio", r"no audio \(audio_abspath", [])
    line(b'{"fname": "latin1", "caption": "caf\xe9", "audio_file_name": "audio/lines.wav"}', "latin1_line",
         r"is not UTF-8 text \(byte 0xe9", [])
    line(b'{"fname": "huge", "caption": "' + b"la " * (HUGE // 3) + b'"}', "huge_line", r"is 10\.0 MB long", [])
    line(song("lines", "audio/lines.wav", language="en", vocal_energy=0.3), "lines", USED, [good])
    listfile = root / name
    listfile.write_bytes(b"\n".join(lines) + b"\n\n")
    return listfile, offers


def utf16_list(root: Path) -> tuple[Path, list[Offer]]:
    """A UTF-16 (BOM) train.txt, as Windows Notepad saves "Unicode": read, every line used."""
    root.mkdir(parents=True, exist_ok=True)
    offers = []
    lines = []
    for i in range(3):
        audio = tone(root / "wavs" / f"clip{i}.wav")
        lines.append(f"wavs/{audio.name}|{GOOD_TEXT} {i}|spk")
        offers.append(Offer(audio.stem, USED, [audio], line=i + 1))
    listfile = root / "train.txt"
    listfile.write_bytes("\r\n".join(lines).encode("utf-16"))
    return listfile, offers


def dataset_json(root: Path, name: str = "dataset.json") -> tuple[Path, list[Offer]]:
    """A ``{metadata, samples}`` dataset JSON (ACE-Step 1.5's), its audio in ``audio/`` (paths relative to the file):
    every audio kind as a labeled sample, and every bad sample kind (one offer per sample, reported as ``row N (``)."""
    import json

    audio_dir = root / "audio"
    samples, offers = [], []

    def sample(obj, name: str, expect: str, files: list[Path]) -> None:
        samples.append(obj)
        offers.append(Offer(name, expect, files, row=len(samples) - 1))

    def song(sid: str, audio: str, **more) -> dict:
        return {"id": sid, "audio_path": audio, "caption": GOOD_TEXT, "lyrics": "[verse] la la", "labeled": True,
                **more}

    for i, k in enumerate(AUDIO_KINDS):
        audio = audio_dir / f"{k.name}{k.ext}"
        k.write(audio)
        sample(song(f"a{i:07x}", f"audio/{audio.name}"), k.name, k.expect, [audio])
    good = "audio/good_wav.wav"
    sample(song("b0000001", "audio/missing.wav"), "missing", r"audio file audio/missing\.wav not found", [])
    (audio_dir / "a_folder.wav").mkdir()
    sample(song("b0000002", "audio/a_folder.wav"), "directory", r"audio/a_folder\.wav is a folder", [])
    sample(song("b0000003", good, labeled=False), "unlabeled", r"not labeled", [])
    sample({"id": "b0000004", "audio_path": good}, "no_caption", r"not labeled", [])
    sample(["not", "a", "sample"], "json_list", r"a JSON list, not a sample object", [])
    sample(song("b0000005", ""), "no_audio_path", r"no audio_path", [])
    sample(song("b0000006", good, caption=["a", "list"]), "list_caption", r'"caption" is a list, not a text', [])
    sample(song("../b7", good), "bad_id", r"the id cannot name a file", [])
    sample(song("a0000000", good), "repeated_id", r"repeats the id of row 0", [])
    sample(song("b0000008", good, prompt_override="tags"), "bad_override", r'"prompt_override" is .tags.', [])
    sample(song("b0000009", "audio/aac_named_m4a.m4a"), "m4a_path", r"\.m4a is not an audio format", [])
    listfile = root / name
    root.mkdir(parents=True, exist_ok=True)
    listfile.write_text(json.dumps({"metadata": {"name": "corpus", "genre_ratio": 0}, "samples": samples}, indent=1),
                        encoding="utf-8")
    return listfile, offers


def hf_dataset(root: Path) -> list[Offer]:
    """ACE-Step's HF dataset on disk, its audio in ``audio/``: every audio kind, missing/folder/duplicate rows and
    10 MB of lyrics."""
    from datasets import Dataset

    audio_dir = root / "audio"
    rows, offers = [], []

    def row(key: str, filename: str, expect: str, files: list[Path], lyrics: str = "la la", name: str = "") -> None:
        rows.append({"keys": key, "filename": filename, "tags": ["pop", "piano"], "norm_lyrics": lyrics,
                     "speaker_emb_path": "", "recaption": {"simplified": "a pop song"}})
        offers.append(Offer(name or key, expect, files, row=len(rows) - 1))

    for k in AUDIO_KINDS:
        audio = audio_dir / f"{k.name}{k.ext}"
        k.write(audio)
        row(k.name, f"audio/{audio.name}", k.expect, [audio])
    row("missing", "audio/missing.wav", r"audio file audio/missing\.wav not found", [])
    (audio_dir / "a_folder.wav").mkdir()
    row("directory", "audio/a_folder.wav", r"audio/a_folder\.wav is a folder", [])
    row("good_wav", "audio/good_flac.flac", r"repeats the key of row 0 with another file", [], name="repeated_key")
    row("good_wav", "audio/good_wav.wav", USED, [audio_dir / "good_wav.wav"], name="repeated_row")  # --repeat_count
    row("huge_lyrics", "audio/good_wav.wav", r"lyrics are 10\.0 MB of text", [], lyrics="la " * (HUGE // 3))
    Dataset.from_list(rows).save_to_disk(str(root))
    return offers


def songgen_preprocessed(root: Path) -> list[Offer]:
    """SongGen's preprocessed ``DatasetDict`` (train split read): songs whose voice file (``mert_input``) is a
    good tone, and every bad row kind (shape, range, lyrics ids, empty T5 ids, a repeated id)."""
    import numpy as np
    import torch
    from datasets import Dataset, DatasetDict

    from audiotrain_songgen import patterns as P

    voices = root.parent / f"{root.name}_voices"
    rows, offers = [], []
    labels = P.delay(torch.randint(0, 1024, (8, 200), generator=torch.Generator().manual_seed(0))).numpy()
    vocal = P.delay(torch.randint(0, 1024, (8, 200), generator=torch.Generator().manual_seed(1)),
                    *P.TRACK_SPECIAL["vocal"], keep_start=True).numpy()

    def row(key: str, expect: str, files: list[Path], name: str = "", **over) -> None:
        base = {"id": key, "labels": labels.astype(np.int16), "input_ids": [40, 41, 1],
                "prompt_input_ids": [261, 7, 8, 0], "target_length": 64000, "mert_input": "random",
                "ref_audio_ids_vocal": vocal.astype(np.int16), "vocal_energy": 300.0}
        rows.append({**base, **over})
        offers.append(Offer(name or key, expect, files, row=len(rows) - 1))

    for i in range(2):
        voice = tone(voices / f"voice{i}.wav", sr=24000)
        row(f"good{i}", USED, [voice], mert_input=str(voice))
    row("good0", r"repeats the id of row 0", [], name="repeated_id")
    row("shape", r"labels has the shape \(4, 12\)", [], labels=np.zeros((4, 12), np.int16))
    row("range", r"labels holds ids outside \[0, 1024\)", [], labels=np.full((8, 208), 1025, np.int16))
    row("stem_range", r"ref_audio_ids_vocal must start with a column of its bos", [],
        ref_audio_ids_vocal=np.zeros((8, 209), np.int16) + 5)
    row("lyrics", r"prompt_input_ids is not \[261\] \+ lyrics \+ \[0\]", [], prompt_input_ids=[7, 8])
    row("t5", r"input_ids \(the caption's T5 ids\) is empty", [], input_ids=[])
    DatasetDict({"train": Dataset.from_list(rows), "eval": Dataset.from_list(rows[:1])}).save_to_disk(str(root))
    return offers


def stem_folder(root: Path) -> list[Offer]:
    """The tiny-streams plugin's ``<key>.<role>.wav`` stems: each audio kind as a key's mix, a good vocal beside it,
    text kinds as ``<key>.txt``; one key lacks its required vocal."""
    root.mkdir(parents=True, exist_ok=True)
    offers = []
    for k in AUDIO_KINDS:
        if not k.wav_only:
            continue
        mix = root / f"{k.name}.mix.wav"
        k.write(mix)
        vocal = tone(root / f"{k.name}.vocal.wav", sr=8000)
        (root / f"{k.name}.txt").write_text(GOOD_TEXT, encoding="utf-8")
        offers.append(Offer(k.name, k.expect, [mix, vocal, root / f"{k.name}.txt"]))
    for t in TEXT_KINDS:
        mix, vocal = tone(root / f"{t.name}.mix.wav"), tone(root / f"{t.name}.vocal.wav", sr=8000)
        (root / f"{t.name}.txt").write_bytes(t.data())
        offers.append(Offer(t.name, t.expect, [mix, vocal, root / f"{t.name}.txt"]))
    mix = tone(root / "no_vocal.mix.wav")
    offers.append(Offer("no_vocal", r"no 'vocal' audio file", [mix]))
    return offers
