"""The ``tiny`` text side: a small random Qwen3 and a byte-level BPE tokenizer built offline (no download).

The tokenizer has Qwen's shape at toy size: byte-level pre-tokenisation, the 256 byte symbols as the vocabulary
(no merges), and ``<|endoftext|>`` (id 256) as a special token that is also the pad and end-of-text token, as in
Qwen3-Embedding-0.6B. ``save_pretrained`` writes a folder that ``AutoTokenizer.from_pretrained`` reads back.
"""
from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen3Config

__all__ = ["END_OF_TEXT", "tiny_tokenizer", "tiny_qwen3_config", "QWEN3_EMBEDDING_0_6B"]

END_OF_TEXT = "<|endoftext|>"

#: Qwen3-Embedding-0.6B's ``config.json`` values (for a weightless meta build; the real folder's config is used
#: when it is loaded)
QWEN3_EMBEDDING_0_6B = dict(vocab_size=151669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                            num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                            max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                            tie_word_embeddings=True, hidden_act="silu", attention_bias=False)


def tiny_tokenizer(model_max_length: int = 4096) -> PreTrainedTokenizerFast:
    """Byte-level BPE over the 256 byte symbols (ids 0-255) plus ``<|endoftext|>`` (id 256, pad and eos)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {sym: i for i, sym in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([END_OF_TEXT])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT,
                                   model_max_length=model_max_length, padding_side="right")


def tiny_qwen3_config(vocab_size: int = 257) -> Qwen3Config:
    """A 2-layer Qwen3 (hidden 32, 4 heads of 8, 2 kv heads) over the tiny tokenizer's vocabulary."""
    return Qwen3Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=4096,
                       rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu",
                       attention_bias=False, pad_token_id=vocab_size - 1, eos_token_id=vocab_size - 1,
                       bos_token_id=None, use_cache=False)
