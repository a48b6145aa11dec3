"""``audiotrain tortoise-prepare VOICE_DIR [--output DIR]``: ai-voice-cloning's "Prepare Dataset" (spec tortoise.md
§2.1–2.3) — a folder of voice clips into ``training/<voice>/`` with ``whisper.json``, ``audio/`` and the
LJSpeech-style ``train.txt`` / ``validation.txt`` that ``audiotrain model=tortoise data=DIR`` (and DLAS) read.

Per clip (wav/mp3/flac/ogg directly in VOICE_DIR), its transcript comes from, in this order:

1. ``<clip name>.txt`` beside it (the user's transcript: one segment covering the clip; never Whisper);
2. its entry in the output's ``whisper.json`` — reused with ``--skip-existing`` (AIVC's Skip Existing) or when no
   Whisper folder is given; with one and without ``--skip-existing`` the clip is transcribed again, as AIVC does;
3. without a Whisper folder, a ``train.txt``/``validation.txt`` line for ``audio/<clip>.wav`` (one segment);
4. Whisper (``--whisper DIR`` or ``model.whisper_path=DIR``: a local transformers Whisper folder).

A reused transcript keeps the text of the earlier run's line for the same audio file when that list is newer than
whisper.json, so edits made to train.txt survive a re-run (a whisper.json edited after the lists wins instead).

Whisper hears the clip mixed to mono at 16 kHz (as ffmpeg hands it to openai-whisper in AIVC). Its segments are
sanitised (§2.1; the raw result is kept in ``whisper.unsanitized.json``; entries of clips no longer in VOICE_DIR stay
in both). ``audio/<clip>.wav`` is the whole clip, first channel, 22,050 Hz PCM 16-bit; with ``--slice`` (or,
unsliced, for a clip whose text is over 200 characters or which is 11.61 s or longer) each segment is cut, with the
offsets and Trim Silence, to ``audio/<clip>_<id:04d>.wav``. Lines outside 0.6–11.61 s or over 200 characters are
culled; short ones go to validation.txt by AIVC's thresholds. Every clip, slice or line left out is in the report
(``bad_inputs.txt``).

The clips are worked on by ``--workers`` processes (default auto: one per CPU core; ``audiotrain.data.prepare_pool``)
under one progress bar, Whisper built once before they start (on a GPU it runs in this process); every file written
— and the report — is the same whatever their number, and a clip a worker fails on is reported like any bad input.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audiotrain.data.audio_io import AUDIO_EXTENSIONS, OTHER_AUDIO_EXTENSIONS, AudioError, decode, is_silent, resample
from audiotrain.data.report import BadInputReport, reason_kind
from audiotrain.data.text_files import read_sidecar
from audiotrain.errors import UserError
from audiotrain_tortoise import prepared_files as F
from audiotrain_tortoise import segments as S

PROG = "audiotrain tortoise-prepare"
WHISPER_KEY = "model.whisper_path"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Prepare a TorToiSe fine-tuning dataset from a folder of voice "
                                                        "clips, as ai-voice-cloning's Prepare Dataset does.")
    ap.add_argument("voice_dir", type=Path, metavar="VOICE_DIR", help="the voice's clips (wav/mp3/flac/ogg), each "
                                                                     "with an optional <name>.txt transcript")
    ap.add_argument("--output", type=Path, default=None, metavar="DIR",
                    help="the dataset folder (default: training/<voice name>)")
    ap.add_argument("--language", default="en", help="the language Whisper transcribes in (default: en; empty: "
                                                     "detect it per clip)")
    ap.add_argument("--validation-text-length", type=float, default=12.0, metavar="CHARS",
                    help="lines whose text is shorter go to validation.txt (default: 12)")
    ap.add_argument("--validation-audio-length", type=float, default=1.0, metavar="SECONDS",
                    help="lines whose audio is shorter go to validation.txt; 0: none (default: 1)")
    ap.add_argument("--skip-existing", action="store_true", help="transcribe only clips not in whisper.json yet")
    ap.add_argument("--slice", action="store_true", help="one line per Whisper segment (audio/<name>_<id>.wav)")
    ap.add_argument("--trim-silence", action="store_true", help="trim the leading silence of every slice")
    ap.add_argument("--start-offset", type=float, default=0.0, metavar="SECONDS", help="added to each slice's start")
    ap.add_argument("--end-offset", type=float, default=0.0, metavar="SECONDS", help="added to each slice's end")
    ap.add_argument("--whisper", default=None, metavar="DIR", help="a local transformers Whisper folder")
    ap.add_argument("--workers", default="auto", metavar="N",
                    help="processes that prepare the clips (default: auto, one per CPU core; 0: in this process); "
                         "the files written are the same whatever the number")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"{WHISPER_KEY}=DIR (the same as --whisper)")
    return ap


def whisper_setting(args: argparse.Namespace) -> tuple[str | None, str]:
    """The Whisper folder and the option that named it, from ``--whisper`` or ``model.whisper_path=``."""
    path, option = args.whisper, "--whisper"
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or key.strip() != WHISPER_KEY:
            raise UserError(f"{item} is not a setting {PROG} takes: the one KEY=VALUE it takes is {WHISPER_KEY}=DIR, "
                            f"the rest are --options (see --help).")
        if path is not None and value != path:
            raise UserError(f"--whisper {path} and {WHISPER_KEY}={value} name two Whisper folders: give one.")
        path, option = value, (option if path is not None else WHISPER_KEY)
    if path is not None and not path.strip():
        raise UserError(f"{option} is empty: give the path of a local transformers Whisper folder.")
    return path, option


@dataclass
class Clip:
    path: Path
    source: str = "whisper"           # txt | whisper.json | lines | whisper
    sidecar: Path | None = None


@dataclass
class Run:
    """What one prepare run collects on its way through the clips."""

    args: argparse.Namespace
    out: Path
    report: BadInputReport
    previous: F.Previous
    results: dict[str, Any] = field(default_factory=dict)
    unsanitized: dict[str, Any] = field(default_factory=dict)
    train: list[tuple[str, str]] = field(default_factory=list)
    validation: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("whisper", "txt", "whisper.json", "lines", "skipped", "culled", "edited"), 0))
    transcriber: Any = None
    clips: int = 0


def list_clips(voice_dir: Path, report: BadInputReport) -> list[Clip]:
    """The clips directly in ``voice_dir`` with their ``.txt`` transcripts; what is not usable is reported."""
    if not voice_dir.exists():
        raise UserError(f"VOICE_DIR {voice_dir}: no such folder; give the folder of the voice's clips.")
    if not voice_dir.is_dir():
        raise UserError(f"VOICE_DIR {voice_dir} is a file, not a folder; give the folder of the voice's clips.")
    entries = sorted((p for p in voice_dir.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    texts = {p.stem: p for p in entries if p.suffix.lower() == ".txt" and p.is_file()}
    clips: list[Clip] = []
    stems: dict[str, Path] = {}
    for p in entries:
        ext = p.suffix.lower()
        if p.is_dir():
            report.add(p, f"a folder: {PROG} reads the clips directly in {voice_dir}, not in subfolders")
        elif ext in OTHER_AUDIO_EXTENSIONS:
            report.add(p, f"{ext} is not an audio format {PROG} reads ({'/'.join(AUDIO_EXTENSIONS)}): convert it")
        elif ext in AUDIO_EXTENSIONS:
            if p.stem in stems:
                report.add(p, f"duplicate of {stems[p.stem].name} (same name, another format): both would be "
                              f"audio/{p.stem}.wav; rename one")
                continue
            stems[p.stem] = p
            clips.append(Clip(p, sidecar=texts.get(p.stem)))
    for stem, t in texts.items():
        if stem not in stems:
            report.add(t, f"a transcript without a clip: no {'/'.join(AUDIO_EXTENSIONS)} file named {stem} beside it")
    return clips


def choose_sources(clips: list[Clip], previous: F.Previous, whisper_given: bool, skip_existing: bool) -> None:
    for clip in clips:
        if clip.sidecar is not None:
            clip.source = "txt"
        elif clip.path.name in previous.whisper and (skip_existing or not whisper_given):
            clip.source = "whisper.json"
        elif not whisper_given and f"{F.AUDIO_DIR}/{clip.path.stem}.wav" in previous.lines:
            clip.source = "lines"
        else:
            clip.source = "whisper"


def _no_whisper_error(need: list[Clip], total: int, out: Path) -> UserError:
    names = ", ".join(c.path.name for c in need[:3]) + (", ..." if len(need) > 3 else "")
    return UserError(f"{len(need)} of {total} clips have no transcript ({names}: no .txt beside them and no entry in "
                     f"{out / F.WHISPER_JSON}), so they need Whisper: pass --whisper DIR or {WHISPER_KEY}=DIR (a local "
                     f"transformers Whisper folder), or put a <clip name>.txt transcript beside each.")


def transcript(run: Run, clip: Clip, channels: np.ndarray, sr: int, duration: float) -> dict[str, Any] | None:
    """The clip's raw (unsanitised) result, or None after reporting why there is none."""
    name, language = clip.path.name, run.args.language
    if clip.source == "txt":
        text = read_sidecar(clip.sidecar, run.report, what="its transcript ", collapse=True)
        return None if text is None else S.whole_clip(text, duration, language)
    if clip.source == "whisper.json":  # as whisper.json has it (edited by hand, perhaps); sanitising it is a no-op
        return run.previous.whisper[name]
    if clip.source == "lines":
        return S.whole_clip(run.previous.lines[f"{F.AUDIO_DIR}/{clip.path.stem}.wav"], duration, language)
    from audiotrain_tortoise.whisper import WhisperError

    if run.transcriber is None:  # (only a clip whose first second did not decode is let through without Whisper)
        run.report.add(clip.path, "it has no transcript and no Whisper folder was given (--whisper DIR)")
        return None
    mono = resample(channels.mean(axis=0, keepdims=True), sr, run.transcriber.sample_rate)[0]
    try:
        return run.transcriber.transcribe(mono)
    except WhisperError as exc:
        run.report.add(clip.path, str(exc))
        return None


def add_line(run: Run, clip: Clip, rel: str, text: str, samples: int, where: str = "") -> None:
    text = S.line_text(text)
    earlier = run.previous.lines.get(rel)
    edited = clip.source == "lines" or (clip.source == "whisper.json" and rel in run.previous.edited)
    if edited and earlier is not None and earlier != text:
        text = earlier  # the earlier run's line, edited by hand since (whisper.json edited later wins instead)
        run.counts["edited"] += 1
    reason = S.cull_reason(text, samples)
    if reason is not None:
        run.report.add(clip.path, f"{where}{rel}: {reason}; the line is culled", kind=reason_kind(reason))
        run.counts["culled"] += 1
        return
    split = S.goes_to_validation(text, samples, run.args.validation_text_length, run.args.validation_audio_length)
    (run.validation if split else run.train).append((rel, text))


def prepare_clip(run: Run, clip: Clip) -> None:
    name, stem, args = clip.path.name, clip.path.stem, run.args
    try:
        channels, sr = decode(clip.path)
    except AudioError as exc:
        run.report.add(clip.path, str(exc))
        run.counts["skipped"] += 1
        return
    if is_silent(channels, 0.95):
        run.report.add(clip.path, "silent (95%+ of the samples are exactly zero)")
        run.counts["skipped"] += 1
        return
    raw = transcript(run, clip, channels, sr, channels.shape[1] / sr)
    if raw is None:
        run.counts["skipped"] += 1
        return
    run.counts[clip.source] += 1
    segments = S.sanitise(raw["segments"])
    text = raw["text"] if isinstance(raw.get("text"), str) else "".join(s["text"] for s in segments)
    entry = dict(raw, text=text, language=raw.get("language", args.language), segments=segments)
    run.results[name] = entry
    run.unsanitized[name] = run.previous.unsanitized.get(name, raw) if clip.source == "whisper.json" else raw
    audio = np.clip(resample(channels[:1], sr, S.SAMPLE_RATE)[0], -1.0, 1.0)
    F.write_wav(run.out / F.AUDIO_DIR / f"{stem}.wav", audio)
    if not (args.slice or S.needs_segments(entry["text"], audio.size)):
        add_line(run, clip, f"{F.AUDIO_DIR}/{stem}.wav", entry["text"], audio.size)
        return
    if not entry["segments"]:
        run.report.add(clip.path, "its transcript has no segments (no speech found), so it gives no slice")
        run.counts["culled"] += 1
    for seg in entry["segments"]:
        rel = f"{F.AUDIO_DIR}/{stem}_{seg['id']:04d}.wav"
        where = f"segment {seg['id']} ({float(seg['start']):.2f}-{float(seg['end']):.2f} s): "
        piece = S.cut(audio, seg, args.start_offset, args.end_offset, args.trim_silence)
        if piece.problem is not None:
            run.report.add(clip.path, f"{where}{rel}: the slice is rejected: {piece.problem}",
                           kind=reason_kind(piece.problem))
            run.counts["culled"] += 1
            continue
        F.write_wav(run.out / rel, piece.audio)
        add_line(run, clip, rel, seg["text"], piece.audio.size, where)


@dataclass
class ClipOutcome:
    """What preparing one clip adds to the run (in a worker process or here), merged in clip order."""

    skipped: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    unsanitized: dict[str, Any] = field(default_factory=dict)
    train: list[tuple[str, str]] = field(default_factory=list)
    validation: list[tuple[str, str]] = field(default_factory=list)


def clip_outcome(run: Run, clip: Clip) -> ClipOutcome:
    """:func:`prepare_clip` on a run of its own (the audio files are written here); a failure that is not a
    setting's is the clip's skip, with the error as its reason."""
    part = Run(run.args, run.out, BadInputReport(source=run.report.source), run.previous, transcriber=run.transcriber)
    try:
        prepare_clip(part, clip)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a library's failure on this file, reported like any bad input
        part = Run(run.args, run.out, BadInputReport(), run.previous)
        part.report.add(clip.path, f"cannot be prepared ({type(exc).__name__}: {exc})")
        part.counts["skipped"] += 1
    return ClipOutcome(part.report.skipped, part.report.notes, {k: v for k, v in part.counts.items() if v},
                       part.results, part.unsanitized, part.train, part.validation)


def merge(run: Run, got: ClipOutcome) -> None:
    run.report.skipped.extend(got.skipped)
    run.report.notes.extend(got.notes)
    for key, n in got.counts.items():
        run.counts[key] += n
    run.results.update(got.results)
    run.unsanitized.update(got.unsanitized)
    run.train.extend(got.train)
    run.validation.extend(got.validation)


def _decodes(path: Path) -> bool:
    try:
        decode(path, max_seconds=1.0)
    except AudioError:
        return False
    return True


def _check_numbers(args: argparse.Namespace) -> None:
    for option in ("validation_text_length", "validation_audio_length", "start_offset", "end_offset"):
        value = getattr(args, option)
        if not math.isfinite(value):
            raise UserError(f"--{option.replace('_', '-')} {value} is not a number: give a finite value.")


def run_prepare(args: argparse.Namespace, report: BadInputReport) -> Run:
    _check_numbers(args)
    from audiotrain.data.prepare_pool import resolve_workers

    workers = resolve_workers(args.workers, "--workers")
    whisper_path, option = whisper_setting(args)
    voice_dir: Path = args.voice_dir
    out: Path = args.output if args.output is not None else Path("training") / voice_dir.resolve().name
    clips = list_clips(voice_dir, report)
    if not clips:
        raise UserError(f"VOICE_DIR {voice_dir} holds no audio files ({'/'.join(AUDIO_EXTENSIONS)}): put the voice's "
                        f"clips directly in it.")
    F.check_output(out, voice_dir)
    run = Run(args, out, report, F.read_previous(out, report), clips=len(clips))
    choose_sources(clips, run.previous, whisper_path is not None, args.skip_existing)
    need = [c for c in clips if c.source == "whisper"]
    if need and whisper_path is None:  # a clip that cannot be decoded is reported below, it needs no Whisper
        need = [c for c in need if _decodes(c.path)]
    if need and whisper_path is None:
        raise _no_whisper_error(need, len(clips), out)
    if need:
        from audiotrain_tortoise.whisper import Transcriber

        run.transcriber = Transcriber(whisper_path, option=option, language=args.language)
        workers = 0 if run.transcriber.device != "cpu" else workers  # CUDA does not survive a fork: Whisper runs here
    run.results, run.unsanitized = dict(run.previous.whisper), dict(run.previous.unsanitized)
    from tqdm import tqdm

    from audiotrain.data.prepare_pool import ordered_map

    with tqdm(total=len(clips), desc="tortoise-prepare", unit="clip", disable=None, file=sys.stderr) as bar:
        for got in ordered_map(lambda i: clip_outcome(run, clips[i]), len(clips), workers, lambda i: str(clips[i].path),
                               option="--workers"):
            merge(run, got)
            bar.update(1)
    F.write_json(out / F.UNSANITIZED_JSON, run.unsanitized)
    F.write_json(out / F.WHISPER_JSON, run.results)
    for name, lines in zip(F.LISTS, (run.train, run.validation)):
        F.write_list(out / name, S.render(lines))
    report.usable = len(run.train) + len(run.validation)
    report.save(out)
    return run


def summary(run: Run) -> str:
    c, out = run.counts, run.out
    reused = c["txt"] + c["whisper.json"] + c["lines"]
    parts = [f"{c[k]} from {label}" for k, label in (("txt", ".txt files"), ("whisper.json", "whisper.json"),
                                                     ("lines", "train.txt/validation.txt")) if c[k]]
    lines = [f"{run.clips} clips: {c['whisper']} transcribed with Whisper, {reused} transcripts reused"
             f"{' (' + ', '.join(parts) + ')' if parts else ''}, {c['skipped']} skipped",
             f"train.txt: {len(run.train)} lines, validation.txt: {len(run.validation)} lines, {c['culled']} culled "
             f"(every reason is in {out / 'bad_inputs.txt'})"]
    if c["edited"]:
        lines.append(f"{c['edited']} lines keep the text they were edited to in the earlier train.txt/validation.txt")
    return "\n".join(lines)


def final_problem(run: Run) -> str | None:
    """The sentence for a dataset that cannot train: nothing usable, or everything in validation.txt."""
    args = run.args
    if not run.train and not run.validation:
        return (f"no clip of {args.voice_dir} gave a usable line ({len(run.report)} problems, listed above and in "
                f"{run.out / 'bad_inputs.txt'}): fix them and run again.")
    if not run.train:
        again = " (add --skip-existing to reuse the transcriptions)" if run.counts["whisper"] else ""
        return (f"all {len(run.validation)} lines went to validation.txt and train.txt is empty: every text is "
                f"shorter than --validation-text-length {args.validation_text_length:g} characters or every clip "
                f"shorter than --validation-audio-length {args.validation_audio_length:g} s; lower them (e.g. "
                f"--validation-text-length 0 --validation-audio-length 0) and run again{again}.")
    return None


def prepare(argv: list[str]) -> int:
    """The command: 0 when train.txt has lines, 2 with one sentence on stderr otherwise."""
    try:
        args = _parser().parse_intermixed_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error (already printed)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    report = BadInputReport(source=str(args.voice_dir))
    try:
        run = run_prepare(args, report)
    except UserError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if len(report) or report.live_notes():
        print(report.summary(full_list=run.out / "bad_inputs.txt"))
    print(summary(run))
    problem = final_problem(run)
    if problem is not None:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return 2
    print(f"Next: audiotrain model=tortoise data={run.out}")
    return 0


if __name__ == "__main__":
    sys.exit(prepare(sys.argv[1:]))
