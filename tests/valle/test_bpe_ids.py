"""VALL-E phoneme ids equal the original's: ``model.tokenizer_path`` encodes IPA exactly as HF ``tokenizers`` does
with the original's BPE ``tokenizer.json`` (no normalizer, no pre-tokenizer, a post-processor adding
``<bos>``/``</eos>``), where a greedy match over the same symbols can disagree."""
from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from tokenizers import Tokenizer, models, processors

from audiotrain_valle import phonemes as ph
from audiotrain_valle.encoders import build_encoders, phoneme_ids, tokenizer_problems
from audiotrain_valle.features import PhonemeFeature

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, how are you today?",
    "She sells sea shells by the sea shore; it's a nice morning.",
    "I want to go home, said the old man, and pour more water.",
    "Thirty-three thousand measures of pleasure, rhythm and little water.",
]

# Merge ranks in order. ("ʊ", "ɹ") outranks ("o", "ʊ"), so BPE turns "oʊɹ" into o + ʊɹ while a greedy longest
# match over the same vocabulary takes oʊ + ɹ (likewise "hˈoʊm" and "sˈɛlz" below, through "ʊm" and "ɛl");
# merges of merges ("ˈaɪ", "ðə ") make multi-level tokens.
MERGES = [("ʊ", "ɹ"), ("ʊ", "m"), ("ɛ", "l"), ("o", "ʊ"), ("a", "ɪ"), ("ˈ", "aɪ"), ("ð", "ə"), ("ðə", " "), ("ɜ", "ː"), ("ˈ", "ɛ"),
          ("ə", "l"), ("ɪ", "ŋ"), ("s", "t"), ("ə", "n"), ("ɪ", "t"), ("ˈ", "oʊ"), ("i", "ː"), ("ɔ", "ː"),
          ("ɑ", "ː"), ("ɚ", " "), ("ˈ", "iː"), ("t", "ə")]


def write_bpe(path, merges=MERGES, post_processor: bool = True):
    """A tokenizer.json shaped like the original's: BPE over IPA symbols, specials 0–3, nothing else."""
    vocab = {s: i for i, s in enumerate([*ph.SPECIALS, *ph.IPA_INVENTORY])}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges), unk_token=ph.UNK))
    tok.add_special_tokens(list(ph.SPECIALS))
    if post_processor:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{ph.BOS} $A {ph.EOS}", special_tokens=[(ph.BOS, 1), (ph.EOS, 2)])
    tok.save(str(path))
    return path, vocab


@pytest.fixture
def bpe(tmp_path):
    return write_bpe(tmp_path / "tokenizer.json")


def test_file_has_the_originals_shape(bpe):
    path, vocab = bpe
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["model"]["type"] == "BPE" and data["normalizer"] is None and data["pre_tokenizer"] is None
    assert [t["content"] for t in data["added_tokens"]] == ["<unk>", "<bos>", "</eos>", "<mask>"]
    assert [t["id"] for t in data["added_tokens"]] == [0, 1, 2, 3] and len(data["model"]["merges"]) == len(MERGES)


@needs_espeak
def test_ids_equal_tokenizers_own_encoding(bpe):
    path, vocab = bpe
    reference = Tokenizer.from_file(str(path))
    feature = PhonemeFeature(ph.Phonemizer("en-us"), ph.PhonemeBPE(path))
    greedy = ph.Symmap(vocab)  # the same symbols, matched greedily (what audiotrain did before)
    phonemizer = ph.Phonemizer("en-us")
    differ = set()
    for n, text in enumerate(SENTENCES):
        ipa = phonemizer.phonemize(text)
        want = reference.encode(ipa).ids
        with warnings.catch_warnings():
            warnings.simplefilter("error", ph.UnknownPhonemeWarning)
            got = feature.encode({"text": text, "language": "en-us"})["phns"]
        assert got.dtype == torch.long and got.tolist() == want
        assert want[0] == 1 and want[-1] == 2 and 0 not in want
        assert len(want) < len(ipa) + 2  # merges were applied
        assert ph.PhonemeBPE(path).decode(want) == ipa
        if greedy.encode(ipa) != want:
            differ.add(n)
    assert differ == {2, 3}  # "sˈɛlz", "hˈoʊm": the greedy match disagrees with BPE there


def test_greedy_match_differs_from_bpe_where_merge_ranks_decide(bpe):
    path, vocab = bpe
    ipa = "mˈoʊɹ"
    bpe_ids = ph.PhonemeBPE(path).encode(ipa)
    assert bpe_ids == Tokenizer.from_file(str(path)).encode(ipa).ids
    assert bpe_ids == [1, vocab["m"], vocab["ˈ"], vocab["o"], vocab["ʊɹ"], 2]  # ʊɹ is merged first
    assert ph.Symmap(vocab).encode(ipa) == [1, vocab["m"], vocab["ˈoʊ"], vocab["ɹ"], 2]  # longest match wins


def test_specials_unknown_symbols_and_no_post_processor(tmp_path, bpe):
    path, vocab = bpe
    enc = ph.PhonemeBPE(path)
    assert (enc.unk_id, enc.bos_id, enc.eos_id, enc.mask_id) == (0, 1, 2, 3) and enc.encode("") == [1, 2]
    assert len(enc) == len(vocab) and enc.size == len(vocab)
    with pytest.warns(ph.UnknownPhonemeWarning, match="2 phoneme symbol"):
        assert enc.encode("a☃b☃") == [1, vocab["a"], 0, vocab["b"], 0, 2]
    assert enc.unknown == {"☃": 2}
    bare, _ = write_bpe(tmp_path / "bare.json", post_processor=False)
    assert Tokenizer.from_file(str(bare)).encode("ðə").ids == [vocab["ðə"]]
    assert ph.PhonemeBPE(bare).encode("ðə") == [1, vocab["ðə"], 2]  # wrapped as the released file's post-processor does


def test_tokenizer_file_is_part_of_the_phoneme_cache_key(tmp_path, bpe, valle_cfg):
    path, _ = bpe
    other, _ = write_bpe(tmp_path / "other.json", merges=MERGES[:5])
    copy = tmp_path / "copy" / "tokenizer.json"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())

    def key(*extra):
        (phonemes,) = [e for e in build_encoders(valle_cfg(*extra), say=lambda _: None) if e.name == "phonemes"]
        return phonemes.cache_key()

    builtin, a, b, c = key(), key(f"model.tokenizer_path={path}"), key(f"model.tokenizer_path={other}"), \
        key(f"model.tokenizer_path={copy}")
    assert len({builtin, a, b}) == 3  # another tokenizer re-encodes the phoneme cache
    assert a == c  # keyed by content: the same file elsewhere reuses it


def _weights(tmp_path):
    from audiotrain_valle.ar_nar import ARNAR
    from audiotrain_valle.checkpoint import save_exported

    torch.manual_seed(0)
    (tmp_path / "ckpt").mkdir(exist_ok=True)
    return save_exported(ARNAR({"preset": "tiny"}), tmp_path / "ckpt" / "fp32.sft",
                         ph.Symmap.builtin().to_dict())


def test_fine_tuning_weights_without_tokenizer_says_one_sentence(tmp_path, bpe, valle_cfg, capsys):
    from audiotrain_valle.plugin import PLUGIN

    weights = _weights(tmp_path)
    PLUGIN.build_encoders(valle_cfg(f"model.weights={weights}"))
    said = capsys.readouterr().err.strip()
    assert len(said.splitlines()) == 1 and said.count(". ") == 0 and said.endswith(".")
    assert "may differ" in said and "model.tokenizer_path=.../tokenizer.json" in said

    PLUGIN.build_encoders(valle_cfg(f"model.weights={weights}", f"model.tokenizer_path={bpe[0]}"))
    PLUGIN.build_encoders(valle_cfg())  # training from scratch: ids are audiotrain's own, nothing to say
    assert capsys.readouterr().err == ""


def test_tokenizer_json_beside_the_weights_is_used_and_named(tmp_path, bpe, valle_cfg):
    path, vocab = bpe
    weights = _weights(tmp_path)
    shutil.copy(path, weights.parent / "tokenizer.json")
    said = []
    enc = phoneme_ids(valle_cfg(f"model.weights={weights}"), say=said.append)
    assert isinstance(enc, ph.PhonemeBPE) and enc.encode("mˈoʊɹ") == Tokenizer.from_file(str(path)).encode("mˈoʊɹ").ids
    assert len(said) == 1 and str(weights.parent / "tokenizer.json") in said[0] and "model.tokenizer_path" in said[0]


@pytest.mark.parametrize("content, reason", [
    (None, "no such file"), (b"", "is empty"), (b"{not json", "is not valid JSON"),
    (b'{"version": "1.0"}', "not a `tokenizers` tokenizer.json"),
    (b'{"model": {"type": "Nope"}}', "not a tokenizer `tokenizers` can read"),
])
def test_bad_tokenizer_path_is_one_sentence(tmp_path, valle_cfg, content, reason):
    from audiotrain.errors import UserError
    from audiotrain_valle.plugin import PLUGIN

    path = tmp_path / "tokenizer.json"
    if content is not None:
        path.write_bytes(content)
    cfg = valle_cfg(f"model.tokenizer_path={path}")
    problems = tokenizer_problems(cfg)
    assert len(problems) == 1 and problems == [p for p in PLUGIN.validate(cfg) if "tokenizer_path" in p]
    msg = problems[0]
    assert msg.startswith(f"model.tokenizer_path={path}") and reason in msg and "\n" not in msg
    assert "tokenizer.json" in msg.split("; pass ", 1)[1]  # says what to pass instead
    with pytest.raises(UserError):
        build_encoders(cfg)
