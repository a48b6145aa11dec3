"""ACE-Step 1.5's text encoder: Qwen3-Embedding-0.6B through transformers' own ``Qwen3Model`` (no remote code).

- Captions: the transformer's ``last_hidden_state`` ``[B, L, 1024]`` of the caption prompt (spec §1c "Text").
- Lyrics: the **token-embedding table** output ``[B, L, 1024]`` of the lyrics prompt, not the transformer
  (spec §1c "Lyrics"; upstream ``preprocess_lyrics.py:24``).
- Both take a :class:`~audiotrain_acestep15.prompts.TokenBatch` (right-padded, mask 1/0) and return the mask as
  given; padded positions are zeros in the output, so a song's features do not depend on its batch.
- :meth:`Qwen3TextEncoder.from_dir` loads the checkpoint's ``Qwen3-Embedding-0.6B/`` folder (config.json,
  model.safetensors, tokenizer files) offline; :meth:`Qwen3TextEncoder.tiny` builds a random 2-layer Qwen3 with
  the offline byte-level tokenizer of :mod:`.tiny_text`; ``save_pretrained`` writes a folder ``from_dir`` reads.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import AutoTokenizer, Qwen3Model

from .prompts import (DEFAULT_DIT_INSTRUCTION, LYRIC_MAX_TOKENS, TEXT_MAX_TOKENS, SongText, TokenBatch,
                      tokenize_songs)
from .tiny_text import tiny_qwen3_config, tiny_tokenizer

__all__ = ["Qwen3TextEncoder", "TextFeatures"]

log = logging.getLogger(__name__)
_EXPECTED = "the checkpoint's Qwen3-Embedding-0.6B/ folder (config.json, model.safetensors, tokenizer.json)"
_VOLATILE = ("_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype")


class TextFeatures(dict):
    """``text_hidden [B,Lt,H]``, ``text_mask [B,Lt]``, ``lyric_embeds [B,Ll,H]``, ``lyric_mask [B,Ll]`` (masks
    int64 1/0) and ``truncated`` (per song: caption or lyrics cut at the cap)."""


class Qwen3TextEncoder:
    """Frozen Qwen3 (eval, no grad) + its tokenizer, padding on the right whatever the folder says."""

    def __init__(self, model: Qwen3Model, tokenizer: Any, *, text_max_length: int = TEXT_MAX_TOKENS,
                 lyric_max_length: int = LYRIC_MAX_TOKENS):
        self.model = model.eval().requires_grad_(False)
        tokenizer.padding_side = "right"
        self.tokenizer = tokenizer
        self.text_max_length = text_max_length
        self.lyric_max_length = lyric_max_length
        self._key: str | None = None

    @classmethod
    def from_dir(cls, path: str | Path, *, option: str | None = None, dtype: torch.dtype = torch.float32,
                 **kwargs: Any) -> "Qwen3TextEncoder":
        """Load ``Qwen3-Embedding-0.6B/`` as data (:mod:`audiotrain.hf_folder`: local files only, no remote code)."""
        from audiotrain.hf_folder import check_folder, load_model
        from audiotrain.safe_files import BadFileError, first_line, where

        folder = check_folder(path, option=option, expected=_EXPECTED)
        if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json")):
            raise BadFileError(f"{where(option, folder)} lacks tokenizer.json; pass {_EXPECTED}.")
        model = load_model(Qwen3Model, folder, option=option, expected=_EXPECTED, dtype=dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
            raise BadFileError(f"{where(option, folder)} holds no tokenizer audiotrain can read without running "
                               f"code from the folder ({first_line(exc)}); pass {_EXPECTED}.") from None
        return cls(model, tokenizer, **kwargs)

    @classmethod
    def tiny(cls, seed: int = 0, **kwargs: Any) -> "Qwen3TextEncoder":
        """Random 2-layer Qwen3 (hidden 32) + the offline byte-level tokenizer; same ``seed`` → same weights
        (the global RNG is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Qwen3Model(tiny_qwen3_config())
        return cls(model, tiny_tokenizer(), **kwargs)

    @property
    def hidden_size(self) -> int:
        """Width of both outputs (1024 for Qwen3-Embedding-0.6B, 32 for tiny)."""
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    def to(self, device: torch.device | str) -> "Qwen3TextEncoder":
        self.model.to(device)
        return self

    def save_pretrained(self, path: str | Path) -> None:
        """Write model + tokenizer so that :meth:`from_dir` reloads them."""
        self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))

    @torch.no_grad()
    def encode_text(self, tokens: TokenBatch) -> torch.Tensor:
        """Caption tokens → ``last_hidden_state`` ``[B, L, H]`` (pads zeroed)."""
        ids, mask = tokens.ids.to(self.device), tokens.mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        return hidden * mask.unsqueeze(-1).to(hidden.dtype)

    @torch.no_grad()
    def embed_lyrics(self, tokens: TokenBatch) -> torch.Tensor:
        """Lyric tokens → token-embedding table rows ``[B, L, H]`` (pads zeroed)."""
        ids, mask = tokens.ids.to(self.device), tokens.mask.to(self.device)
        emb = self.model.get_input_embeddings()(ids)
        return emb * mask.unsqueeze(-1).to(emb.dtype)

    def tokenize(self, songs: Sequence[SongText], *,
                 instruction: str = DEFAULT_DIT_INSTRUCTION) -> tuple[TokenBatch, TokenBatch]:
        """``(caption tokens, lyric tokens)`` by the one template and padding rule of :mod:`.prompts`."""
        return tokenize_songs(self.tokenizer, songs, instruction=instruction, text_max_length=self.text_max_length,
                              lyric_max_length=self.lyric_max_length)

    def encode_songs(self, songs: Sequence[SongText], *,
                     instruction: str = DEFAULT_DIT_INSTRUCTION) -> TextFeatures:
        """Everything the condition encoder reads about a batch of songs (training cache and inference alike)."""
        text, lyric = self.tokenize(songs, instruction=instruction)
        cut = [a or b for a, b in zip(text.truncated, lyric.truncated)]
        for song, a, b in zip(songs, text.truncated, lyric.truncated):
            if a or b:
                log.warning("song %r: %s cut at the text encoder's cap (%d caption / %d lyric tokens)",
                            song.caption[:40], "caption and lyrics" if a and b else ("caption" if a else "lyrics"),
                            self.text_max_length, self.lyric_max_length)
        return TextFeatures(text_hidden=self.encode_text(text), text_mask=text.mask,
                            lyric_embeds=self.embed_lyrics(lyric), lyric_mask=lyric.mask, truncated=cut)

    def cache_key(self) -> str:
        """Hash of the model config, the weights, the tokenizer and the caps (memoised: frozen)."""
        if self._key is None:
            import json

            from audiotrain.encoders.base import stable_hash, state_dict_digest

            cfg = {k: v for k, v in self.model.config.to_dict().items() if k not in _VOLATILE}
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            if backend is not None:
                doc = json.loads(backend.to_str())
                tok = {k: v for k, v in doc.items() if k not in ("padding", "truncation")}
            else:
                tok = sorted(self.tokenizer.get_vocab().items())
            self._key = stable_hash("acestep15-qwen3-text", cfg, state_dict_digest(self.model), tok,
                                    self.text_max_length, self.lyric_max_length)
        return self._key
