"""Qwen3 text encoder: transformer last_hidden_state for captions, the token-embedding table for lyrics, pads
masked (a song's features do not depend on its batch), and the folder round trip through transformers' own
Qwen3Model + AutoTokenizer."""
from __future__ import annotations

import pytest
import torch
from transformers import Qwen3Config, Qwen3Model

from audiotrain.errors import UserError
from audiotrain_acestep15.prompts import SongText
from audiotrain_acestep15.text_encoder import Qwen3TextEncoder
from audiotrain_acestep15.tiny_text import QWEN3_EMBEDDING_0_6B

SONG = SongText(caption="lofi hip hop, rainy night", lyrics="[Verse]\nSoft lights", bpm=85, keyscale="C major",
                timesignature="4", language="en", duration=31)
LONG = SongText(caption="orchestral epic with choir and taiko drums " * 3, lyrics="[Chorus]\nRise up " * 8,
                duration=200)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Qwen3TextEncoder:
    """The tiny encoder written as a Qwen3-Embedding-style folder and loaded back with from_dir."""
    folder = tmp_path_factory.mktemp("qwen3-tiny")
    Qwen3TextEncoder.tiny(seed=3).save_pretrained(folder)
    return Qwen3TextEncoder.from_dir(folder)


def test_folder_round_trip_is_bit_exact(encoder, tmp_path):
    fresh = Qwen3TextEncoder.tiny(seed=3)
    want, got = fresh.model.state_dict(), encoder.model.state_dict()
    assert list(want) == list(got) and all(torch.equal(want[k], got[k]) for k in want)
    assert type(encoder.model) is Qwen3Model and encoder.tokenizer.padding_side == "right"
    a, b = fresh.encode_songs([SONG]), encoder.encode_songs([SONG])
    assert all(torch.equal(a[k], b[k]) for k in ("text_hidden", "text_mask", "lyric_embeds", "lyric_mask"))
    assert encoder.cache_key() == fresh.cache_key() != Qwen3TextEncoder.tiny(seed=4).cache_key()


def test_caption_is_the_transformer_and_lyrics_the_embedding_table(encoder):
    feats = encoder.encode_songs([SONG])
    text, lyric = encoder.tokenize([SONG])
    assert feats["text_hidden"].shape == (1, text.ids.shape[1], 32) and feats["lyric_embeds"].shape == (
        1, lyric.ids.shape[1], 32)
    with torch.no_grad():
        hidden = encoder.model(input_ids=text.ids).last_hidden_state
    torch.testing.assert_close(feats["text_hidden"], hidden, rtol=0, atol=1e-6)
    table = encoder.model.embed_tokens.weight
    assert torch.equal(feats["lyric_embeds"][0], table[lyric.ids[0]])
    assert not torch.allclose(feats["text_hidden"][0, :5], table[text.ids[0, :5]], atol=1e-3)
    assert feats["truncated"] == [False]


def test_a_song_encodes_the_same_alone_and_padded_in_a_batch(encoder):
    alone = encoder.encode_songs([SONG])
    batch = encoder.encode_songs([SONG, LONG])
    for feat, mask in (("text_hidden", "text_mask"), ("lyric_embeds", "lyric_mask")):
        n = alone[feat].shape[1]
        assert batch[feat].shape[1] > n and int(batch[mask][0].sum()) == n
        torch.testing.assert_close(batch[feat][0, :n], alone[feat][0], rtol=0, atol=1e-5)
        assert bool((batch[feat][0, n:] == 0).all())


def test_caps_are_reported(encoder, caplog):
    small = Qwen3TextEncoder(encoder.model, encoder.tokenizer, text_max_length=40, lyric_max_length=30)
    with caplog.at_level("WARNING"):
        feats = small.encode_songs([SONG])
    assert feats["truncated"] == [True] and feats["text_hidden"].shape[1] == 40
    assert feats["lyric_embeds"].shape[1] == 30 and "cut at the text encoder's cap" in caplog.text


def test_released_size_on_meta_and_bad_folders(tmp_path):
    with torch.device("meta"):
        model = Qwen3Model(Qwen3Config(**QWEN3_EMBEDDING_0_6B))
    sd = model.state_dict()
    assert sd["embed_tokens.weight"].shape == (151669, 1024) and len(sd) == 2 + 28 * 11
    assert sum(p.numel() for p in model.parameters()) == 595_776_512
    with pytest.raises(UserError, match="no such folder"):
        Qwen3TextEncoder.from_dir(tmp_path / "nope", option="model.text_encoder_dir")
    Qwen3TextEncoder.tiny().model.save_pretrained(tmp_path / "no-tok")
    with pytest.raises(UserError, match="lacks tokenizer.json"):
        Qwen3TextEncoder.from_dir(tmp_path / "no-tok")
