"""Transcribing a clip with transformers' Whisper from a local folder, into the entry AIVC writes to whisper.json:
``{"text", "language", "segments": [{"id", "start", "end", "text"}]}``.

- The folder is read as data (:func:`audiotrain.hf_folder.load_model`: local files only, no remote code, weights
  checked first); the processor (feature extractor + tokenizer) comes from the same folder.
- Timestamps: ``generate(return_timestamps=True, return_segments=True)``, whose timestamp logits processor makes
  Whisper predict ``<|t|>`` tokens and which returns each segment's start, end and tokens. A clip of up to 30 s is
  padded to Whisper's 30 s window as usual; a longer one is passed whole (``truncation=False``), so generate runs
  Whisper's sequential long-form algorithm, seeking window after window to the last predicted timestamp. A
  segment's text is its tokens decoded without special and timestamp tokens; ``text`` is their concatenation.
  Times are clamped to the clip (a model may predict a timestamp inside the padding); a decoding without any
  timestamp pair is one segment covering the window, as generate itself makes it.
- Language: a code or a name (``en``, ``english``); empty = detected per clip (``detect_language``) and recorded.
  An English-only model takes English only.
- A generate that stops advancing through the audio is stopped (a :class:`WhisperError`, like any failure on one
  clip): prepare reports that clip and goes on.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from audiotrain.errors import UserError
from audiotrain.safe_files import BadFileError, first_line, where

SAMPLE_RATE = 16000
EXPECTED = ("a local transformers Whisper folder (e.g. openai/whisper-base saved with save_pretrained: config.json, "
            "model.safetensors, generation_config.json and the processor's tokenizer and feature-extractor files)")
#: calls of generate's progress callback at one position before it counts as stuck
STUCK_CALLS = 3


class WhisperError(RuntimeError):
    """Whisper failed on one clip; the message says how, in a few words."""


class _Stuck(Exception):
    pass


def _language_code(language: str, lang_to_id: dict[str, int]) -> str | None:
    """``en`` / ``english`` / ``<|en|>`` as the code the model has a token for, else None."""
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    lang = language.strip().lower()
    lang = lang[2:-2] if lang.startswith("<|") and lang.endswith("|>") else lang
    lang = TO_LANGUAGE_CODE.get(lang, lang)
    return lang if f"<|{lang}|>" in lang_to_id else None


def _complete_generation_config(model: Any, tokenizer: Any) -> None:
    """Fill what timestamped transcription needs and an older folder's generation config may lack, from the
    tokenizer's special tokens (the token ids of Whisper's layout)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    gc = model.generation_config
    vocab = tokenizer.get_vocab()
    if getattr(gc, "no_timestamps_token_id", None) is None and "<|notimestamps|>" in vocab:
        gc.no_timestamps_token_id = vocab["<|notimestamps|>"]
    if getattr(gc, "lang_to_id", None) is None:
        langs = {f"<|{c}|>": vocab[f"<|{c}|>"] for c in LANGUAGES if f"<|{c}|>" in vocab}
        if langs:
            gc.lang_to_id = langs
    if getattr(gc, "task_to_id", None) is None and all(f"<|{t}|>" in vocab for t in ("transcribe", "translate")):
        gc.task_to_id = {t: vocab[f"<|{t}|>"] for t in ("transcribe", "translate")}
    if getattr(gc, "is_multilingual", None) is None:
        gc.is_multilingual = bool(getattr(gc, "lang_to_id", None))
    if getattr(gc, "decoder_start_token_id", None) is None and "<|startoftranscript|>" in vocab:
        gc.decoder_start_token_id = vocab["<|startoftranscript|>"]


@contextmanager
def _quiet_transformers():
    """No "Loading weights" bar and no deprecation chatter from inside transformers' own Whisper generate: the
    command's progress bar and report are what the user reads. Restored afterwards."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


class Transcriber:
    """One Whisper model and its processor; :meth:`transcribe` turns 16 kHz mono audio into a whisper.json entry."""

    sample_rate = SAMPLE_RATE

    def __init__(self, path: str | Path, *, option: str, language: str):
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from audiotrain.hf_folder import load_model

        self.option = option
        folder = Path(str(path)).expanduser()
        with _quiet_transformers():
            self.model = load_model(WhisperForConditionalGeneration, path, option=option, expected=EXPECTED)
            try:
                self.processor = WhisperProcessor.from_pretrained(str(folder), local_files_only=True)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise BadFileError(f"{where(option, folder)} holds no Whisper processor (tokenizer and feature "
                                   f"extractor) readable from local files ({first_line(exc)}); "
                                   f"pass {EXPECTED}.") from None
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()
        _complete_generation_config(self.model, self.processor.tokenizer)
        gc = self.model.generation_config
        if getattr(gc, "no_timestamps_token_id", None) is None:
            raise BadFileError(f"{where(option, folder)} has no <|notimestamps|> token, so its Whisper cannot predict "
                               f"the timestamps segments need; pass {EXPECTED}.")
        self.multilingual = bool(getattr(gc, "is_multilingual", False) and getattr(gc, "lang_to_id", None))
        self.language = self._check_language(language, folder)

    def _check_language(self, language: str, folder: Path) -> str | None:
        """The language code to transcribe in; None = detect per clip."""
        if not language.strip():
            return None if self.multilingual else "en"
        if not self.multilingual:
            if _language_code(language, {"<|en|>": 0}) == "en":
                return "en"
            raise UserError(f"--language {language}: {where(self.option, folder)} is an English-only Whisper; pass "
                            f"--language en, or a multilingual Whisper folder.")
        code = _language_code(language, self.model.generation_config.lang_to_id)
        if code is None:
            known = sorted(k[2:-2] for k in self.model.generation_config.lang_to_id)
            raise UserError(f"--language {language} is not a language {where(self.option, folder)} transcribes: pass "
                            f"one of {', '.join(known[:20])}{', ...' if len(known) > 20 else ''}, or an empty "
                            f"--language to detect it.")
        return code

    def _features(self, audio: np.ndarray):
        fe = self.processor.feature_extractor
        if audio.size <= fe.n_samples:
            inputs = self.processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        else:  # long-form: all the frames, generate seeks through them window by window
            inputs = self.processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", truncation=False,
                                    padding="longest")
        return inputs.input_features.to(self.device, self.model.dtype)

    def _detect(self, features) -> str:
        ids = self.model.detect_language(features[:, :, :self.processor.feature_extractor.nb_max_frames])
        token = self.processor.tokenizer.convert_ids_to_tokens(int(ids[0]))
        return token[2:-2] if token.startswith("<|") and token.endswith("|>") else token

    def transcribe(self, audio: np.ndarray) -> dict[str, Any]:
        """The whisper.json entry for ``audio`` (float32 mono at 16 kHz); :class:`WhisperError` when Whisper fails."""
        import torch

        duration = audio.size / SAMPLE_RATE
        try:
            features = self._features(np.asarray(audio, dtype=np.float32))
            with torch.no_grad(), _quiet_transformers():
                language = self.language or (self._detect(features) if self.multilingual else "en")
                kwargs = {"language": language, "task": "transcribe"} if self.multilingual else {}
                out = self.model.generate(features, return_timestamps=True, return_segments=True,
                                          monitor_progress=_progress_guard(), **kwargs)
        except _Stuck:
            raise WhisperError("Whisper stopped advancing through the audio (it kept predicting the same "
                               "timestamp)") from None
        except Exception as exc:  # noqa: BLE001 - any failure inside transformers costs this clip only
            raise WhisperError(f"Whisper failed on it ({type(exc).__name__}: {first_line(exc)})") from None
        segments = []
        for seg in out["segments"][0] if isinstance(out, dict) and out.get("segments") else []:
            start = min(max(float(seg["start"]), 0.0), duration)
            if start >= duration:
                continue  # inside the padding after the clip
            end = min(max(float(seg["end"]), start), duration)
            text = self.processor.tokenizer.decode(seg["tokens"], skip_special_tokens=True)
            segments.append({"id": len(segments), "start": round(start, 3), "end": round(end, 3), "text": text})
        return {"text": "".join(s["text"] for s in segments), "language": language, "segments": segments}


def _progress_guard():
    """generate's ``monitor_progress`` callback: raises when the position stays the same too many calls in a row."""
    state = {"seek": None, "same": 0}

    def check(progress) -> None:
        seek = tuple(int(x) for x in progress[:, 0].tolist())
        state["same"] = state["same"] + 1 if seek == state["seek"] else 0
        state["seek"] = seek
        if state["same"] >= STUCK_CALLS - 1:
            raise _Stuck()

    return check
