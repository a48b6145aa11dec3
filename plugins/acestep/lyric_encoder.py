"""ACE-Step's lyric Conformer: the core ESPnet-style encoder (:mod:`audiotrain.models.conformer`) at ACE-Step's
released size.

The layout, the relative-position attention and the masking are documented in the core module; this module
keeps the names ACE-Step code and tests import (``LyricConformerEncoder`` and the building blocks) with the
release's constructor defaults: width 1024, 16 heads, 4096 FFN units, 6 blocks, dropouts 0.1 / 0.1 / 0.0.
"""
from __future__ import annotations

from audiotrain.models.conformer import (  # noqa: F401  (re-exported for ACE-Step code and tests)
    ConformerEncoder,
    ConformerEncoderLayer,
    LinearInput,
    PositionwiseFeedForward,
    RelPositionalEncoding,
    RelPositionMultiHeadedAttention,
    rel_shift,
)


class LyricConformerEncoder(ConformerEncoder):
    """The lyric encoder of ACE-Step.

    Args:
        input_size: width of the lyric token embeddings (``lyric_hidden_size``).
        output_size: model width ``d`` (1024 in the release).
        attention_heads: heads (16), ``d_k = d / heads``.
        linear_units: FFN width (4096).
        num_blocks: number of encoder layers (6).
        dropout_rate / positional_dropout_rate / attention_dropout_rate: 0.1 / 0.1 / 0.0.

    ``forward(xs (B, L, input_size), pad_mask (B, L) with 1 = valid)`` returns
    ``(out (B, L, d), mask (B, 1, L) bool)``.
    """

    def __init__(
        self,
        input_size: int = 1024,
        output_size: int = 1024,
        attention_heads: int = 16,
        linear_units: int = 4096,
        num_blocks: int = 6,
        dropout_rate: float = 0.1,
        positional_dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.0,
    ) -> None:
        super().__init__(input_size, output_size, attention_heads, linear_units, num_blocks, dropout_rate,
                         positional_dropout_rate, attention_dropout_rate)
