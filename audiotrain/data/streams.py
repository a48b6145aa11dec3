"""A row's audio streams: which file plays which role, and what each frozen encoder is given.

A manifest row names its audio files by role in ``row["audio"] = {role: path}`` (see ``manifest.py``). The
plugin declares, per role, the :class:`~audiotrain.data.audio_io.StreamSpec` the core decodes that stream to
(``Plugin.audio_streams``); a frozen encoder names the one role it reads (``FrozenEncoder.stream``) and is given
that stream's decoded audio as ``example["audio"]`` / ``example["audio_length"]``; an encoder whose stream is
``None`` reads only the row's text fields and is given no audio at all.
"""
from __future__ import annotations

from typing import Any, Mapping

from audiotrain.data.audio_io import AudioSpec, StreamSpec
from audiotrain.errors import UserError

#: the role of a row's only file when a reader names one (``audio_path``) and of a plugin's default stream
MAIN = "main"


def normalise_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row with its files under ``audio: {role: path}``: a reader's single ``audio_path`` becomes the
    :data:`MAIN` role (and is removed, so the path has one home)."""
    out = dict(row)
    files = dict(out.get("audio") or {})
    if "audio_path" in out:
        path = out.pop("audio_path")
        if path is not None:
            files.setdefault(MAIN, str(path))
    out["audio"] = {str(role): str(p) for role, p in files.items() if p}
    for name, value in out.items():  # the file paths keep their bytes; the text fields must be valid text
        if name not in ("audio", "given"):
            out[name] = printable(value)
    return out


def printable(value: Any) -> Any:
    """``value`` with every string made valid UTF-8: a key or speaker made from a file name that is not UTF-8
    (``caf\udce9`` from latin-1 bytes) becomes ``caf\\xe9``, which hashing, seeding and logging accept."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, list):
        return [printable(v) for v in value]
    return value


def as_streams(spec: AudioSpec | Mapping[str, StreamSpec]) -> dict[str, StreamSpec]:
    """A plugin's stream declaration; a single :class:`AudioSpec` is the one required :data:`MAIN` stream."""
    if isinstance(spec, Mapping):
        if not spec:
            raise ValueError("a plugin must declare at least one audio stream")
        return {str(role): s if isinstance(s, StreamSpec) else StreamSpec(**_fields(s)) for role, s in spec.items()}
    return {MAIN: StreamSpec(**_fields(spec), required=True)}


def with_sources(row: dict[str, Any], streams: Mapping[str, StreamSpec]) -> dict[str, Any]:
    """The row with the file of each stream read from another role's (``StreamSpec.source``) named under its own
    role too, when the row has that file and names none of its own: from here on it is a stream like any other."""
    files = row["audio"]
    derived = {role: files[s.source] for role, s in streams.items()
               if s.source is not None and role not in files and s.source in files}
    return {**row, "audio": {**files, **derived}} if derived else row


def primary(streams: Mapping[str, StreamSpec]) -> str:
    """The role whose duration is an example's duration (batching, duration filters): the first declared."""
    return next(iter(streams))


def check_encoders(streams: Mapping[str, StreamSpec], encoders) -> None:
    """Every encoder reads a declared stream (or none)."""
    for t in encoders:
        role = getattr(t, "stream", None)
        if role is not None and role not in streams:
            raise UserError(f"The frozen encoder '{t.name}' reads the '{role}' audio stream, which the plugin does "
                            f"not declare (its streams: {', '.join(streams)}); declare it in Plugin.audio_streams.")


def text_part(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a text-only encoder may read of a row: every field but the audio files and the given features."""
    return {k: v for k, v in row.items() if k not in ("audio", "given")}


def encoder_input(example: Mapping[str, Any], stream: str | None) -> dict[str, Any] | None:
    """The example one encoder is given: the prepared text fields, plus — for an encoder of a stream — that
    stream's ``audio`` (C, N) tensor and ``audio_length``. None when the encoder's (optional) stream is absent."""
    base = {k: v for k, v in example.items() if k not in ("audio", "streams", "given")}
    if stream is None:
        return base
    decoded = (example.get("streams") or {}).get(stream)
    if decoded is None:
        return None
    return {**base, "audio": decoded["audio"], "audio_length": decoded["audio_length"]}


def _fields(spec: AudioSpec) -> dict[str, Any]:
    return {"sample_rate": spec.sample_rate, "channels": spec.channels, "min_duration": spec.min_duration,
            "max_duration": spec.max_duration, "silence_threshold": spec.silence_threshold,
            "strict_bounds": spec.strict_bounds}
