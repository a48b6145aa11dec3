"""SongGen's frozen encoders: lyrics ids (core VoiceBpe + SongGen's rule), the tiny/folder T5 description encoder,
and X-Codec (frame count, codes range, batched == one by one, decode, feature seam, cache keys). All offline."""
from __future__ import annotations

import json
import math

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from audiotrain.errors import UserError
from audiotrain_songgen import codec as xc
from audiotrain_songgen.lyrics import LyricsFeature, lyrics_ids, lyrics_tokenizer
from audiotrain_songgen.text_encoder import DescriptionEncoder, DescriptionFeature, text_dir_key, tiny_text_key

SR = 16000


# ---- lyrics ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def builtin():
    return lyrics_tokenizer()


def small_vocab(path, extra_merges=()):
    """A small tokenizers BPE vocab.json with SongGen's special ids and a few merges, written by the test."""
    letters = list("abcdefghijklmnopqrstuvwxyz.,'!?-")
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("o", "r"), ("c", "a"), ("t", "s"), *extra_merges]
    pieces = letters + [a + b for a, b in merges]
    fixed = {0: "[STOP]", 1: "[UNK]", 2: "[SPACE]", 259: "[en]", 260: "[de]", 261: "[START]"}
    free = iter(pieces)
    vocab = {}
    for i in range(262 + len(pieces)):
        vocab[fixed[i] if i in fixed else next(free, f"[unused{i}]")] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(fixed.values()))
    tok.save(str(path))
    return path


def test_builtin_vocab_layout(builtin):
    assert builtin.vocab_size == 6681
    ids = [builtin.token_to_id(t) for t in ("[STOP]", "[UNK]", "[SPACE]", "[en]", "[de]", "[START]", "[hi]")]
    assert ids == [0, 1, 2, 259, 260, 261, 6680]


def test_lyrics_ids_builtin(builtin):
    assert lyrics_ids("", builtin) == [261, 0]
    assert lyrics_ids("  \n \n", builtin) == [261, 0]
    assert lyrics_ids(None, builtin) == [261, 0]
    ids = lyrics_ids("Hello world\nLa la", builtin)
    assert ids == [261, 259, 10, 730, 915, 2, 25, 996, 904, 52, 901, 2, 901, 0]
    assert builtin.decode(ids) == "[START][en]hello world.la la[STOP]"
    assert lyrics_ids("I have 2 cats", builtin) == [261, 259, 11, 2, 10, 636, 7, 2, 1131, 17, 2, 5, 634, 21, 0]
    # "\n" → "." after stripping the ends (leading/trailing newlines vanish, inner ones become dots)
    assert lyrics_ids("\nab\ncd\n", builtin) == lyrics_ids("ab.cd", builtin)
    assert lyrics_ids("ab\ncd", builtin) == [261, *builtin.encode("ab.cd", "en"), 0]
    assert 1 not in ids


def test_lyrics_ids_with_a_vocab_file(tmp_path):
    path = small_vocab(tmp_path / "vocab.json")
    tok = lyrics_tokenizer(path)
    ref = Tokenizer.from_file(str(path))
    text = "Hello, World!\nI have 2 cats"
    cleaned = "hello, world!.i have two cats"
    assert tok.clean(text.replace("\n", "."), "en") == cleaned
    want = ref.encode("[en]" + cleaned.replace(" ", "[SPACE]"), add_special_tokens=False).ids
    got = lyrics_ids(text, tok)
    assert got == [261, *want, 0]
    assert ref.token_to_id("hell") in got and got[1] == 259 and 1 not in got
    assert lyrics_ids("", tok) == [261, 0]


def test_lyrics_feature_and_keys(tmp_path, builtin):
    feat = LyricsFeature(builtin)
    assert feat.name == "lyrics" and feat.stream is None
    out = feat.encode({"lyrics": "la\nla"})
    assert out["lyrics_ids"].dtype == torch.long and out["lyrics_ids"].tolist() == lyrics_ids("la.la", builtin)
    assert feat.encode({})["lyrics_ids"].tolist() == [261, 0]
    assert feat.cache_key() == LyricsFeature().cache_key()
    a = small_vocab(tmp_path / "a.json")
    b = small_vocab(tmp_path / "b.json", extra_merges=[("ca", "ts")])
    key_a = LyricsFeature(vocab_path=a).cache_key()
    assert key_a == LyricsFeature(vocab_path=tmp_path / "a.json").cache_key()
    assert len({feat.cache_key(), key_a, LyricsFeature(vocab_path=b).cache_key()}) == 3


def test_vocab_without_songgen_ids(tmp_path):
    tok = Tokenizer(models.BPE(vocab={"[UNK]": 0, "[STOP]": 1, "a": 2}, merges=[], unk_token="[UNK]"))
    tok.save(str(tmp_path / "vocab.json"))
    with pytest.raises(UserError, match=r"\[STOP\] is 1 \(SongGen: 0\)"):
        lyrics_tokenizer(tmp_path / "vocab.json")
    (tmp_path / "bad.json").write_text("{ not json")
    with pytest.raises(UserError, match="model.lyrics_vocab_path"):
        lyrics_tokenizer(tmp_path / "bad.json")


# ---- description (T5) encoder -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def t5():
    return DescriptionEncoder.tiny(seed=0)


def test_tiny_t5_deterministic_and_mask(t5):
    feat = DescriptionFeature(t5)
    assert feat.name == "text" and feat.stream is None
    out = feat.encode({"caption": "  a happy pop song  "})
    ids = t5.token_ids("a happy pop song")
    assert ids[-1] == 1 and ids[:2] == [ord("a") + 3, ord(" ") + 3] and len(ids) == len("a happy pop song") + 1
    assert out["text_hidden"].shape == (len(ids), 32) and out["text_hidden"].dtype == torch.float32
    assert out["text_mask"].tolist() == [1.0] * len(ids)
    again = DescriptionFeature(DescriptionEncoder.tiny(seed=0)).encode({"caption": "a happy pop song"})
    assert torch.equal(again["text_hidden"], out["text_hidden"])
    other = DescriptionFeature(DescriptionEncoder.tiny(seed=1)).encode({"caption": "a happy pop song"})
    assert not torch.allclose(other["text_hidden"], out["text_hidden"])
    assert t5.token_ids("") == [1] and feat.encode({"caption": None})["text_hidden"].shape == (1, 32)
    assert feat.cache_key() == tiny_text_key(0) == tiny_text_key(0) != tiny_text_key(1)


def test_t5_folder_round_trip(tmp_path, t5):
    t5.save_pretrained(tmp_path / "enc")
    back = DescriptionEncoder.from_dir(tmp_path / "enc")
    ex = {"caption": "slow piano ballad, female vocals"}
    assert torch.equal(DescriptionFeature(back).encode(ex)["text_hidden"], DescriptionFeature(t5).encode(ex)["text_hidden"])
    assert back.cache_key() == text_dir_key(tmp_path / "enc") == text_dir_key(tmp_path / "enc") != t5.cache_key()
    # a full encoder-decoder folder (flan-t5's layout): only the encoder is read
    from transformers import T5ForConditionalGeneration

    from audiotrain_songgen.text_encoder import tiny_t5_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        full = T5ForConditionalGeneration(tiny_t5_config()).eval()
    full.save_pretrained(tmp_path / "full")
    t5.tokenizer.save_pretrained(tmp_path / "full")
    enc = DescriptionEncoder.from_dir(tmp_path / "full")
    ids = torch.tensor([enc.token_ids("abc")])
    with torch.no_grad():
        want = full.get_encoder()(input_ids=ids).last_hidden_state[0]
    assert torch.allclose(enc.encode("abc")[0], want, atol=1e-5)
    with pytest.raises(UserError, match="tokenizer.json"):
        DescriptionEncoder.from_dir(tmp_path / "nothing")


# ---- X-Codec -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def codec():
    return xc.tiny_codec(seed=0)


def wave(n, seed=0, freq=220.0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / SR
    return 0.4 * torch.sin(2 * math.pi * freq * t) + 0.05 * torch.randn(n, generator=g)


def one_alone(codec, w):
    with torch.no_grad():
        return codec.encode(w.view(1, 1, -1), bandwidth=4.0, return_dict=False)[0]


def test_codec_layout_and_frame_count(codec):
    assert xc.bandwidth_for(codec) == 4.0 and codec.quantizer.get_num_quantizers_for_bandwidth(4.0) == 8
    assert codec.config.frame_rate == 50 and codec.config.hop_length == 320
    codes = xc.encode_batch(codec, [wave(4 * SR)])[0]
    assert codes.shape == (8, 200) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < 1024 and codes.unique().numel() > 50
    for n in (80, 319, 320, 399, 400, 559, 560, 16000, 16239, 16240, 64079, 64080):
        t = one_alone(codec, wave(n)).shape[-1]
        assert t == xc.num_frames(codec, n) == (n + 240) // 320, n
    assert xc.num_frames(codec, 79) == 0
    with pytest.raises(ValueError, match="at least 80"):
        xc.encode_batch(codec, [torch.zeros(79)])


def test_batched_equals_one_by_one(codec):
    waves = [wave(16000, 1, 330.0), wave(24100, 2, 110.0), wave(20000, 3, 440.0), wave(16000, 4, 550.0)]
    batched = xc.encode_batch(codec, waves, max_batch=8)
    alone = [xc.encode_batch(codec, [w])[0] for w in waves]
    direct = [one_alone(codec, w) for w in waves]
    assert [c.shape[-1] for c in batched] == [50, 76, 63, 50]
    for b, a, d in zip(batched, alone, direct):
        assert torch.equal(b, a) and torch.equal(b, d)
    assert [torch.equal(b, a) for b, a in zip(xc.encode_batch(codec, waves, max_batch=1), batched)] == [True] * 4


def test_padding_would_change_codes(codec):
    # Why encode_batch never pads: HuBERT's GroupNorm and attention see the padding, so every frame can change.
    w = wave(24000, 7)
    alone = one_alone(codec, w)
    padded = one_alone(codec, torch.nn.functional.pad(w, (0, 8000)))[:, : alone.shape[-1]]
    assert not torch.equal(padded, alone)


def test_decode_shape(codec):
    codes = torch.stack(xc.encode_batch(codec, [wave(8000, 1), wave(8000, 2)]))
    audio = xc.decode(codec, codes)
    assert codes.shape == (2, 8, 25) and audio.shape == (2, 1, 25 * 320) and audio.dtype == torch.float32
    assert torch.isfinite(audio).all()
    with pytest.raises(ValueError, match="strip BOS"):
        xc.decode(codec, torch.full((1, 8, 3), 1025))


def test_codec_feature(codec):
    feat = xc.CodecFeature(codec, xc.tiny_codec_key(0), stream="vocal")
    assert feat.name == "codes_vocal" and feat.stream == "vocal"
    w = wave(17000, 9)
    padded = torch.cat([w, torch.zeros(3000)])[None]
    out = feat.encode({"audio": padded, "audio_length": 17000})
    assert torch.equal(out["codes_vocal"], one_alone(codec, w)) and out["codes_vocal"].shape == (8, 53)
    lazy = xc.CodecFeature.lazy_for("acc", xc.tiny_codec_key(0), lambda: codec)
    assert (lazy.name, lazy.stream, lazy.loaded) == ("codes_acc", "acc", False)
    assert lazy.cache_key() == xc.CodecFeature(codec, xc.tiny_codec_key(0), "acc").cache_key() != feat.cache_key()


def test_codec_keys_and_folder(tmp_path, codec):
    assert xc.tiny_codec_key(0) == xc.tiny_codec_key(0) != xc.tiny_codec_key(1)
    w = wave(12000, 11)
    assert torch.equal(one_alone(xc.tiny_codec(seed=0), w), one_alone(codec, w))
    codec.save_pretrained(tmp_path / "xcodec")
    back = xc.load_codec(tmp_path / "xcodec")
    assert torch.equal(xc.encode_batch(back, [w])[0], xc.encode_batch(codec, [w])[0])
    key = xc.codec_dir_key(tmp_path / "xcodec")
    assert key == xc.codec_dir_key(tmp_path / "xcodec") != xc.tiny_codec_key(0)
    cfg = json.loads((tmp_path / "xcodec" / "config.json").read_text())
    cfg["target_bandwidths"] = [0.5, 1.0]
    (tmp_path / "xcodec" / "config.json").write_text(json.dumps(cfg))
    assert xc.codec_dir_key(tmp_path / "xcodec") != key
    with pytest.raises(UserError, match="8 codebooks"):
        xc.load_codec(tmp_path / "xcodec")
