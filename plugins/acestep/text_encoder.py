"""UMT5 text encoder of ACE-Step v1 (spec §4c, §1c step 2): frozen ``UMT5EncoderModel`` + its tokenizer.

- ``TextEncoder.from_dir(path)`` loads the checkpoint's ``umt5-base/`` folder offline
  (``local_files_only=True``): ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``) +
  ``tokenizer.json`` (or ``spiece.model``).
- ``TextEncoder.tiny(seed)`` builds a randomly initialised tiny UMT5 encoder (d_model 32, 2 layers, 2 heads,
  vocab 384) with an in-code UTF-8 byte tokenizer (id = byte + 3; 0 ``<pad>``, 1 ``</s>`` appended to every
  prompt like T5, 2 ``<unk>``) — no download, deterministic for a seed, and ``save_pretrained``-able so the
  result loads back with ``from_dir``.
- ``encode_prompts(prompts, max_length=256)`` → ``(hidden (B, L, d), mask (B, L) float)``: padding to the
  longest prompt, truncation at ``max_length`` tokens, ``last_hidden_state``, no grad, no pooling.
- ``TextEncoderFeature`` is the core ``FrozenEncoder`` seam (namespace ``"text"``) over one ``example["prompt"]``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from audiotrain.encoders.base import FrozenEncoder, stable_hash, state_dict_digest

MAX_TEXT_TOKENS = 256
_VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "architectures", "_commit_hash", "dtype",
                         "torch_dtype", "_attn_implementation_autoset")


def byte_tokenizer(model_max_length: int = MAX_TEXT_TOKENS) -> PreTrainedTokenizerFast:
    """UTF-8 byte tokenizer built offline: ids 0 <pad>, 1 </s> (appended), 2 <unk>, byte b → b + 3."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    vocab.update({f"<0x{b:02X}>": b + 3 for b in range(256)})
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.decoder = decoders.ByteFallback()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=model_max_length)


def tiny_umt5_config() -> UMT5Config:
    """Config of the tiny random encoder used by the ``tiny`` preset and tests."""
    return UMT5Config(vocab_size=384, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                      relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
                      feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


class TextEncoder:
    """Frozen UMT5 encoder + tokenizer (see module doc). Weights are put in eval mode with grads off."""

    def __init__(self, model: UMT5EncoderModel, tokenizer: Any, max_length: int = MAX_TEXT_TOKENS):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self._key: str | None = None

    @classmethod
    def from_dir(cls, path: str | Path, dtype: torch.dtype = torch.float32,
                 max_length: int = MAX_TEXT_TOKENS, trust_pickle: bool = False) -> "TextEncoder":
        """Load ``umt5-base/`` (or any saved ``UMT5EncoderModel`` + tokenizer folder) as data, without network and
        without running code from the folder (:mod:`audiotrain.hf_folder`)."""
        from audiotrain.hf_folder import MissingFile, load_model
        from audiotrain.safe_files import BadFileError, first_line

        p = Path(path)
        has_weights = any((p / f).is_file() for f in ("model.safetensors", "pytorch_model.bin",
                                                      "model.safetensors.index.json"))
        has_tok = any((p / f).is_file() for f in ("tokenizer.json", "spiece.model"))
        if not (p.is_dir() and (p / "config.json").is_file() and has_weights and has_tok):
            raise MissingFile(
                f"UMT5 text encoder not found: {p} must be a folder with config.json, model.safetensors and "
                "tokenizer.json (the umt5-base/ folder of the ACE-Step checkpoint); nothing is downloaded.")
        expected = "the umt5-base/ folder of the ACE-Step v1-3.5B checkpoint"
        model = load_model(UMT5EncoderModel, p, option=None, expected=expected, trust_pickle=trust_pickle, dtype=dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(p), local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
            raise BadFileError(f"{p} holds no tokenizer audiotrain can read without running code from the folder "
                               f"({first_line(exc)}); pass "
                               f"{expected}.") from None
        return cls(model, tokenizer, max_length=max_length)

    @classmethod
    def tiny(cls, seed: int = 0, max_length: int = MAX_TEXT_TOKENS) -> "TextEncoder":
        """Tiny random UMT5 encoder (d 32) + byte tokenizer; same ``seed`` → same weights (global RNG kept)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = UMT5EncoderModel(tiny_umt5_config())
        return cls(model, byte_tokenizer(max_length), max_length=max_length)

    @property
    def hidden_size(self) -> int:
        """Width ``d`` of the hidden states (768 for umt5-base, 32 for tiny)."""
        return int(self.model.config.d_model)

    def to(self, device: torch.device | str) -> "TextEncoder":
        """Move the encoder to ``device``; returns self."""
        self.model.to(device)
        return self

    def save_pretrained(self, path: str | Path) -> None:
        """Write model + tokenizer so that ``from_dir(path)`` reloads them."""
        self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], max_length: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts → ``(last_hidden_state (B, L, d), attention mask (B, L) float32)`` on the model's device.

        ``L`` is the longest tokenised prompt (incl. ``</s>``), at most ``max_length`` (default 256)."""
        enc = self.tokenizer(list(prompts), padding="longest", truncation=True,
                             max_length=max_length or self.max_length, return_tensors="pt")
        device = next(self.model.parameters()).device
        ids = enc["input_ids"].to(device)
        mask = enc["attention_mask"].to(device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden, mask.to(torch.float32)

    def cache_key(self) -> str:
        """Hash of the model config, weights digest, tokenizer identity and ``max_length`` (memoised: the
        weights are frozen)."""
        if self._key is None:
            cfg = {k: v for k, v in self.model.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            if backend is not None:  # drop per-call padding/truncation state the HF wrapper leaves behind
                doc = json.loads(backend.to_str())
                tok_id = json.dumps({k: v for k, v in doc.items() if k not in ("padding", "truncation")},
                                    sort_keys=True)
            else:
                tok_id = repr(sorted(self.tokenizer.get_vocab().items()))
            tok_id = stable_hash(tok_id, getattr(self.tokenizer, "padding_side", "right"),
                                 getattr(self.tokenizer, "truncation_side", "right"))
            self._key = stable_hash("acestep-umt5", cfg, state_dict_digest(self.model), tok_id, self.max_length)
        return self._key


class TextEncoderFeature(FrozenEncoder):
    """``example["prompt"]`` → ``{"text_hidden": FloatTensor(L, d), "text_mask": FloatTensor(L)}`` on CPU.

    With ``variants`` K > 1 and the song's ``tags``/``recaption`` in the example, its K prompts
    (:func:`audiotrain_acestep.prompts.prompt_variants`) → ``text_hidden`` (K, L, d) and ``text_mask`` (K, L),
    each prompt encoded on its own (so each equals the single-prompt features) and right-padded to the longest;
    the plugin's ``choose_variant`` takes one per training step."""

    name = "text"

    def __init__(self, encoder: TextEncoder, variants: int = 1):
        self.encoder = encoder
        self.variants = max(1, int(variants))

    def cache_key(self) -> str:
        """The encoder's key (config + weights + tokenizer + max_length), and K when K > 1."""
        if self.variants == 1:
            return stable_hash("acestep-text-feature", self.encoder.cache_key())
        return stable_hash("acestep-text-feature", self.encoder.cache_key(), "variants", self.variants)

    def _one(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, mask = self.encoder.encode_prompts([prompt])
        return hidden[0].to("cpu", torch.float32), mask[0].to("cpu")

    def encode(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Encode one prompt (no padding: the mask is all ones over its ``L`` tokens), or the song's K prompts."""
        if self.variants == 1 or "tags" not in example:
            hidden, mask = self._one(str(example["prompt"]))
            return {"text_hidden": hidden, "text_mask": mask}
        from audiotrain_acestep.prompts import prompt_variants

        prompts = prompt_variants(example.get("tags"), example.get("recaption"), str(example["key"]), self.variants)
        done: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for p in prompts:  # a prompt drawn twice is encoded once
            if p not in done:
                done[p] = self._one(p)
        longest = max(h.shape[0] for h, _ in done.values())
        hidden = torch.zeros(len(prompts), longest, next(iter(done.values()))[0].shape[-1])
        mask = torch.zeros(len(prompts), longest)
        for i, p in enumerate(prompts):
            h, m = done[p]
            hidden[i, : h.shape[0]] = h
            mask[i, : m.shape[0]] = m
        return {"text_hidden": hidden, "text_mask": mask}
