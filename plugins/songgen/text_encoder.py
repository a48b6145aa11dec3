"""SongGen's description (caption) encoder: a frozen flan-t5 encoder (``T5EncoderModel``) + its tokenizer.

- ``DescriptionEncoder.from_dir(path)``: a local folder (e.g. ``google/flan-t5-large``: ``config.json``,
  ``model.safetensors``, ``tokenizer.json``), read as data by :mod:`audiotrain.hf_folder` (no download, no code
  from the folder). A full ``T5ForConditionalGeneration`` folder loads too: only the encoder weights are used.
- ``DescriptionEncoder.tiny(seed)``: a tiny random T5 encoder (d_model 32, 2 layers, gated-gelu like flan-t5),
  seeded and deterministic, with an in-code tokenizer following T5's conventions (``t5_byte_tokenizer``: 0
  ``<pad>``, 1 ``</s>`` appended to every text, 2 ``<unk>``, UTF-8 byte b → id b + 3). ``save_pretrained``
  writes a folder ``from_dir`` reads back.
- ``tiny_text_key(seed)`` / ``text_dir_key(path)``: cache keys without building the model (config + weights:
  the seed for tiny, the weight and tokenizer files' fingerprints for a folder).
- ``DescriptionFeature``: the core FrozenEncoder seam (name ``"text"``, text only): ``example["caption"]``
  (stripped; None → ``""``) → ``{"text_hidden": FloatTensor[L, d], "text_mask": FloatTensor[L]}``: T5's
  ``last_hidden_state`` multiplied by the attention mask (as SongGen does), ``L`` = tokens incl. ``</s>``, no
  truncation (captions of 600+ characters are dropped by the data reader, not here).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, processors

from audiotrain.encoders.base import stable_hash
from audiotrain.encoders.frozen import FrozenFeature, weights_key

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
TEXT_VERSION = "songgen-t5-v1"
TEXT_EXPECTED = ("a local flan-t5 folder (config.json, model.safetensors and tokenizer.json, e.g. "
                 "google/flan-t5-large), or model.preset=tiny for a test run")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_VOLATILE = ("_name_or_path", "transformers_version", "architectures", "_commit_hash", "dtype", "torch_dtype",
             "_attn_implementation_autoset")
#: the tiny encoder's T5Config fields
TINY_T5 = dict(vocab_size=3 + 256 + 5, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
               relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.0,
               feed_forward_proj="gated-gelu", pad_token_id=PAD_ID, eos_token_id=EOS_ID, decoder_start_token_id=PAD_ID,
               is_encoder_decoder=True, tie_word_embeddings=False)


def t5_byte_tokenizer() -> Any:
    """T5-convention tokenizer built in code: ``<pad>`` 0, ``</s>`` 1 (appended), ``<unk>`` 2, byte b → b + 3."""
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD_ID, "</s>": EOS_ID, "<unk>": UNK_ID, **{f"<0x{b:02X}>": b + 3 for b in range(256)}}
    backend = HFTokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.decoder = decoders.ByteFallback()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", EOS_ID)])
    backend.add_special_tokens(["<pad>", "</s>", "<unk>"])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   padding_side="right")


def tiny_t5_config() -> Any:
    """The ``T5Config`` of ``DescriptionEncoder.tiny``."""
    from transformers import T5Config

    return T5Config(**TINY_T5)


def tiny_text_key(seed: int = 0) -> str:
    """Cache key of ``DescriptionEncoder.tiny(seed)``: the seed, the config and the tokenizer's layout."""
    return stable_hash(TEXT_VERSION, "tiny", int(seed), TINY_T5, "byte-tokenizer-v1")


def _check_dir(path: str | Path, option: str | None) -> Path:
    from audiotrain.hf_folder import check_folder

    return check_folder(path, option=option, expected=TEXT_EXPECTED, need=("config.json", "tokenizer.json"))


def text_dir_key(path: str | Path, option: str | None = None) -> str:
    """Cache key of a flan-t5 folder without loading it: config.json plus the weight and tokenizer files'
    fingerprints."""
    from audiotrain.safe_files import read_json

    p = _check_dir(path, option)
    config = read_json(p / "config.json", option=option, expected=TEXT_EXPECTED)
    config = {k: v for k, v in config.items() if k not in _VOLATILE} if isinstance(config, dict) else config
    weights = sorted(p.glob("model*.safetensors")) or sorted(p.glob("pytorch_model*.bin"))
    return weights_key(TEXT_VERSION, config, files=[*weights, *(p / f for f in _TOKENIZER_FILES if (p / f).is_file())])


class DescriptionEncoder:
    """Frozen T5 encoder + tokenizer (module doc); ``key`` is its cache key."""

    def __init__(self, model: Any, tokenizer: Any, key: str):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.key = key

    @classmethod
    def from_dir(cls, path: str | Path, option: str | None = None, trust_pickle: bool = False,
                 dtype: torch.dtype = torch.float32) -> "DescriptionEncoder":
        """Load a flan-t5 folder as data (module doc); ``option`` names the setting in error messages."""
        from transformers import AutoTokenizer, T5EncoderModel

        from audiotrain.hf_folder import load_model
        from audiotrain.safe_files import BadFileError, first_line, where

        p = _check_dir(path, option)
        model = load_model(T5EncoderModel, p, option=option, expected=TEXT_EXPECTED, trust_pickle=trust_pickle,
                           dtype=dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(p), local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
            raise BadFileError(f"{where(option, p)} holds no tokenizer readable without running code from the folder "
                               f"({first_line(exc)}); pass {TEXT_EXPECTED}.") from None
        return cls(model, tokenizer, text_dir_key(p, option))

    @classmethod
    def tiny(cls, seed: int = 0) -> "DescriptionEncoder":
        """Tiny random T5 encoder + byte tokenizer; same ``seed`` → same weights (global RNG kept)."""
        from transformers import T5EncoderModel

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = T5EncoderModel(tiny_t5_config())
        return cls(model, t5_byte_tokenizer(), tiny_text_key(seed))

    @property
    def hidden_size(self) -> int:
        """Width ``d`` of the hidden states (1024 for flan-t5-large, 32 for tiny)."""
        return int(self.model.config.d_model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: Any) -> "DescriptionEncoder":
        self.model.to(device)
        return self

    def save_pretrained(self, path: str | Path) -> None:
        """Write model + tokenizer so that ``from_dir(path)`` reads them back."""
        self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))

    def token_ids(self, caption: str) -> list[int]:
        """Token ids of one caption (stripped), ending with ``</s>`` (1), without padding or truncation."""
        return list(self.tokenizer(caption.strip(), truncation=False)["input_ids"])

    @torch.no_grad()
    def encode(self, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        """One caption → ``(last hidden × mask (L, d), mask (L,))``, float32 on the CPU."""
        return self.encode_ids(self.token_ids(caption))

    @torch.no_grad()
    def encode_ids(self, token_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (a caption already tokenised, e.g. a preprocessed dataset's ``input_ids``) → as :meth:`encode`.
        Ids this T5 does not have are one error naming the fix (a dataset tokenised for another T5)."""
        from audiotrain.errors import UserError

        vocab = int(self.model.config.vocab_size)
        if not token_ids or min(token_ids) < 0 or max(token_ids) >= vocab:
            raise UserError(f"The caption's T5 ids run up to {max(token_ids, default=-1)}, but this text encoder has "
                            f"{vocab} ids: a preprocessed dataset needs the T5 it was tokenised for — give "
                            f"model.text_encoder_path=<the flan-t5-large folder>.")
        ids = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        mask = torch.ones_like(ids)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)
        return hidden[0].to("cpu", torch.float32), mask[0].to("cpu", torch.float32)

    def cache_key(self) -> str:
        return self.key


class DescriptionFeature(FrozenFeature):
    """``example["caption"]`` → ``{"text_hidden": (L, d), "text_mask": (L,)}`` (module doc).

    Its cache key is the encoder's (``tiny_text_key`` / ``text_dir_key``), so ``DescriptionFeature.lazy(key,
    build)`` agrees with the built feature."""

    name = "text"
    stream = None

    def __init__(self, encoder: DescriptionEncoder):
        super().__init__(encoder, encoder.cache_key())

    def features(self, example: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        ids = example.get("t5_ids")
        if ids:  # a preprocessed dataset's caption ids, used as they are
            hidden, mask = self.module.encode_ids(list(ids))
        else:
            hidden, mask = self.module.encode(str(example.get("caption") or ""))
        return {"text_hidden": hidden, "text_mask": mask}
