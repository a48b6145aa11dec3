"""TorToiSe UnifiedVoice: the released layout on the meta device against the reference key list, the tiny model's
names, the forward's targets on a hand-checked example (tortoise_compat on and off), losses and logits, the two
conditioning-residual forms against a hand-written block, and AR sampling."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from audiotrain.models.presets import seeded
from audiotrain_tortoise.conditioning import AttentionBlock, norm_groups
from audiotrain_tortoise.presets import PRESETS, context_length, get_preset, resolve_config
from audiotrain_tortoise.unified_voice import UnifiedVoice
from tests.ref_keys import ref_keys

S, START = 8193, 8192  # stop / start mel tokens


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_release_matches_autoregressive_pth_on_meta():
    ref = ref_keys("tortoise_autoregressive")
    buffers = set(ref["buffer_keys"])
    assert len(buffers) == 60 and all(k.endswith(("attn.bias", "attn.masked_bias")) for k in buffers)
    assert ref["tied_parameter_groups"] == []
    want = {k: v for k, v in ref["keys"].items() if k not in buffers}
    with torch.device("meta"):
        model = UnifiedVoice("release")
    ours = _shapes(model)
    # 470 keys in the list, 60 of them GPT-2's mask buffers: 410 parameters (the list's
    # keys_without_attn_mask_buffers field says 380, which its own keys contradict)
    assert len(ref["keys"]) == ref["num_keys"] == 470 and len(ours) == len(want) == 410
    assert ours == want and list(ours) == list(want)  # names, shapes and order
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"] == 421_526_786
    assert not list(model.buffers())
    n = context_length(model.cfg)
    assert n == ref["gpt2_config"]["n_positions"] == 1012
    assert ref["keys"]["gpt.h.0.attn.bias"] == [1, 1, n, n]
    assert sum(v.numel() for v in model.state_dict().values()) + 30 * (n * n + 1) == ref["state_dict_numel"]
    assert model.gpt.h[0].attn.c_attn.weight.shape == (1024, 3072)  # HF Conv1D (in, out)
    assert model.conditioning_encoder.attn[0].norm.num_groups == 32


def test_tiny_uses_the_released_names_and_token_layout():
    with torch.device("meta"):
        release, tiny = UnifiedVoice("release"), UnifiedVoice("tiny")
    rel = _shapes(release)
    ours = _shapes(tiny)
    assert set(ours) == {k for k in rel if not k.startswith("gpt.h.") or int(k.split(".")[2]) < 2}
    assert ours["text_embedding.weight"] == [256, 64] and ours["mel_embedding.weight"] == [8194, 64]
    assert ours["mel_pos_embedding.emb.weight"] == [608, 64] and ours["text_pos_embedding.emb.weight"] == [404, 64]
    assert tiny.conditioning_encoder.attn[0].norm.num_groups == 16 == norm_groups(64)


def test_presets_and_overrides():
    assert set(PRESETS) == {"tiny", "release"}
    cfg = resolve_config({"preset": "tiny", "tortoise_compat": False}, {"cond_residual": "dlas"})
    assert (cfg["tortoise_compat"], cfg["cond_residual"], cfg["layers"]) == (False, "dlas", 2)
    assert PRESETS["tiny"]["tortoise_compat"] is True and get_preset("release")["layers"] == 30
    for bad, match in [({"layer": 3}, "unknown keys"), ({"heads": 5}, "divisible"),
                       ({"cond_residual": "both"}, "cond_residual"), ({"train_solo_embeddings": True}, "solo"),
                       ({"start_text_token": 256}, "outside")]:
        with pytest.raises(ValueError, match=match):
            resolve_config("tiny", bad)
    with pytest.raises(KeyError, match="unknown TorToiSe preset"):
        get_preset("huge")


@pytest.fixture(scope="module")
def tiny() -> UnifiedVoice:
    return seeded(lambda: UnifiedVoice("tiny")).eval()


TEXT = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0]])
TEXT_LEN = torch.tensor([3, 2])
CODES = torch.tensor([[10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24, 25]])
WAV_LEN = torch.tensor([2100, 5120])  # 2 and 5 whole codes of 1024 samples


def test_targets_without_tortoise_compat_crop_and_pad_with_stop():
    model = UnifiedVoice({"preset": "tiny", "tortoise_compat": False, "layers": 1})
    wav_len = WAV_LEN.clone()
    text_in, text_tgt, mel_in, mel_tgt = model.prepare_targets(TEXT, TEXT_LEN, CODES, wav_len)
    assert text_in.tolist() == [[255, 5, 6, 7, 0], [255, 8, 9, 0, 0]]
    assert text_tgt.tolist() == [[5, 6, 7, 0, 0], [8, 9, 0, 0, 0]]
    # codes cropped to max(5120 // 1024) = 5, stop appended; row 0 (2 codes) is stop from position 2 + 1 = 3 on
    assert mel_in.tolist() == [[START, 10, 11, 12, S, S, S], [START, 20, 21, 22, 23, 24, S]]
    assert mel_tgt.tolist() == [[10, 11, 12, S, S, S, S], [20, 21, 22, 23, 24, S, S]]
    assert torch.equal(wav_len, WAV_LEN) and CODES[0, 3] == 13  # the caller's tensors are untouched


def test_targets_with_tortoise_compat_keep_every_code():
    model = UnifiedVoice({"preset": "tiny", "layers": 1})
    _, _, mel_in, mel_tgt = model.prepare_targets(TEXT, TEXT_LEN, CODES, WAV_LEN)
    assert mel_in.tolist() == [[START, 10, 11, 12, 13, 14, 15, S], [START, 20, 21, 22, 23, 24, 25, S]]
    assert mel_tgt.tolist() == [[10, 11, 12, 13, 14, 15, S, S], [20, 21, 22, 23, 24, 25, S, S]]


def test_forward_losses_and_logits(tiny):
    torch.manual_seed(0)
    cond = torch.randn(2, 2, 80, 172)
    loss_text, loss_mel, logits = tiny(cond, TEXT, TEXT_LEN, CODES, WAV_LEN)
    assert torch.isfinite(loss_text) and torch.isfinite(loss_mel)
    assert logits.shape == (2, 8194, 8)  # (B, number_mel_codes, 1 + 6 codes + stop)
    # near-uniform predictions of a fresh model: CE close to log(vocabulary)
    assert abs(loss_mel.item() - math.log(8194)) < 1.5 and abs(loss_text.item() - math.log(256)) < 1.5
    # the losses are the plain mean CE over every target position (no ignore index)
    text_in, text_tgt, mel_in, mel_tgt = tiny.prepare_targets(TEXT, TEXT_LEN, CODES, WAV_LEN)
    text_logits, mel_logits = tiny.logits(tiny.conditioning_tokens(cond), text_in, mel_in)
    assert torch.allclose(loss_mel, F.cross_entropy(mel_logits, mel_tgt)) and torch.allclose(logits, mel_logits)
    assert torch.allclose(loss_text, F.cross_entropy(text_logits, text_tgt))
    # the mel logits of position t only see the sequence up to t (causal)
    changed = CODES.clone()
    changed[:, 5] = 99
    later = tiny(cond, TEXT, TEXT_LEN, changed, WAV_LEN)[2]
    assert torch.allclose(later[..., :6], logits[..., :6], atol=1e-5)
    assert not torch.allclose(later[..., 6], logits[..., 6])
    lat = tiny(cond, TEXT, TEXT_LEN, CODES, WAV_LEN, return_latent=True)
    assert lat.shape == (2, 6, 64)  # the two tokens this forward added are stripped (tortoise_compat)


def test_forward_trains(tiny):
    model = seeded(lambda: UnifiedVoice({"preset": "tiny", "checkpointing": True})).train()
    cond = torch.randn(2, 2, 80, 40)
    loss_text, loss_mel, _ = model(cond, TEXT, TEXT_LEN, CODES, WAV_LEN)
    (0.01 * loss_text + loss_mel).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["gpt.h.1.mlp.c_fc.weight"].abs().sum() > 0
    assert grads["conditioning_encoder.init.weight"].abs().sum() > 0


def _reference_block(block: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """TorToiSe's attention block written out: GroupNorm, per-head q/k/v slices, softmax(qᵀk/√c), x + proj."""
    n = F.group_norm(x, block.norm.num_groups, block.norm.weight, block.norm.bias, eps=1e-5)
    qkv = F.conv1d(n, block.qkv.weight, block.qkv.bias)
    c = x.size(1) // block.heads
    heads = []
    for i in range(block.heads):
        chunk = qkv[:, 3 * c * i:3 * c * (i + 1)]
        q, k, v = chunk[:, :c], chunk[:, c:2 * c], chunk[:, 2 * c:]
        att = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (B, T, T): query t, key s
        heads.append(v @ att.transpose(1, 2))
    return x + F.conv1d(torch.cat(heads, dim=1), block.proj_out.weight, block.proj_out.bias)


def test_the_two_conditioning_residuals():
    torch.manual_seed(1)
    tortoise, dlas = AttentionBlock(64, 4, "tortoise"), AttentionBlock(64, 4, "dlas")
    with torch.no_grad():
        for p in tortoise.parameters():
            p.normal_(0, 0.3)
    dlas.load_state_dict(tortoise.state_dict())
    x = torch.randn(2, 64, 30) * 2 + 1
    out = tortoise(x)
    assert torch.allclose(out, _reference_block(tortoise, x), atol=1e-5)
    assert torch.allclose(dlas(x), _reference_block(tortoise, x) - x + tortoise.norm(x), atol=1e-5)
    assert (out - dlas(x)).abs().max() > 0.5
    # in the whole model: the same weights give other conditioning latents and other losses
    a = seeded(lambda: UnifiedVoice("tiny")).eval()
    b = UnifiedVoice({"preset": "tiny", "cond_residual": "dlas"}).eval()
    with torch.no_grad():
        for p in a.conditioning_encoder.parameters():
            p.normal_(0, 0.1)
    b.load_state_dict(a.state_dict())
    cond = torch.randn(1, 2, 80, 50)
    assert (a.conditioning_latents(cond) - b.conditioning_latents(cond)).abs().max() > 0.1
    assert a(cond, TEXT[:1], TEXT_LEN[:1], CODES[:1], WAV_LEN[:1])[1] != b(cond, TEXT[:1], TEXT_LEN[:1], CODES[:1],
                                                                           WAV_LEN[:1])[1]


def test_conditioning_latents_average_the_clips(tiny):
    cond = torch.randn(2, 3, 80, 60)
    tokens = tiny.conditioning_tokens(cond)
    assert tokens.shape == (2, 3, 64)
    assert torch.allclose(tokens[:, 1], tiny.conditioning_encoder(cond[:, 1]), atol=1e-6)
    assert torch.allclose(tiny.conditioning_latents(cond), tokens.mean(1), atol=1e-6)


def test_sampling(tiny):
    cond = tiny.conditioning_latents(torch.randn(1, 2, 80, 60))[0]
    text = torch.tensor([20, 21, 2, 22])
    greedy = tiny.sample(text, cond, greedy=True, max_codes=12)
    assert len(greedy) == 1 and greedy[0].shape == (12,) and greedy[0].dtype == torch.long
    assert torch.equal(greedy[0], tiny.sample(text, cond, greedy=True, max_codes=12)[0])  # deterministic
    tiny.train()  # a preview during training: no dropout, and the mode is given back
    try:
        assert torch.equal(greedy[0], tiny.sample(text, cond, greedy=True, max_codes=12)[0]) and tiny.training
    finally:
        tiny.eval()
    # the greedy code at each step is the argmax of the teacher-forced logits of the codes before it
    prefix = torch.cat([cond[None, None], tiny._text_emb(torch.tensor([[255, 20, 21, 2, 22, 0]]))], dim=1)
    mel = torch.tensor([[START, *greedy[0][:5].tolist()]])
    hidden = tiny.final_norm(tiny.gpt(torch.cat([prefix, tiny._mel_emb(mel)], dim=1)))
    assert tiny.mel_head(hidden[0, -6:]).argmax(-1).tolist() == greedy[0][:6].tolist()
    gen = torch.Generator().manual_seed(0)
    sampled = tiny.sample(text.expand(2, -1), cond, temperature=1.0, top_p=0.8, max_codes=8, generator=gen)
    assert [s.numel() for s in sampled] == [8, 8] and all(int(s.max()) < 8194 for s in sampled)
    # a stop token ends a row: make stop the only choice
    with torch.no_grad():
        tiny.mel_head.bias[S] += 1e4
    try:
        assert tiny.sample(text, cond, greedy=True, max_codes=12)[0].numel() == 0
    finally:
        with torch.no_grad():
            tiny.mel_head.bias[S] -= 1e4


def test_our_gpt2_blocks_equal_transformers_gpt2_fed_embeddings():
    """The released weights were made by HF's GPT2Model (wte removed, wpe a zero): same keys, same outputs."""
    from transformers import GPT2Config, GPT2Model

    from audiotrain_tortoise.gpt2 import GPT2

    ours = seeded(lambda: GPT2(2, 64, 4, 1012, 0.1)).eval()
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=1012, vocab_size=256, activation_function="gelu_new",
                     layer_norm_epsilon=1e-5, bos_token_id=None, eos_token_id=None)
    hf = GPT2Model(cfg).eval()
    result = hf.load_state_dict(ours.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["wpe.weight", "wte.weight"] and not result.unexpected_keys
    with torch.no_grad():
        hf.wpe.weight.zero_()
        x = torch.randn(2, 50, 64)
        assert torch.allclose(ours(x), hf(inputs_embeds=x).last_hidden_state, atol=1e-5)


def test_dlas_optimizer_groups_and_32bit_embedding_state():
    """DLAS's two AdamW groups (weight decay 0.01 on weights; 0 on biases, norms and every embedding) and, with
    bitsandbytes (AIVC's default), 32-bit Adam state for the embeddings, 8-bit for the GPT-2 weights."""
    from audiotrain.train.optim import build_optimizer, embedding_weights
    from audiotrain.train.param_groups import torch_param_groups
    from audiotrain_tortoise.backbone import TortoiseBackbone

    from tests.conftest import compose

    optim = compose(["model=tortoise"]).optimizer
    assert optim.name == "adamw8bit" and optim.embeddings_32bit
    backbone = TortoiseBackbone(seeded(lambda: UnifiedVoice("tiny"), 0))
    groups = {g["name"]: g for g in torch_param_groups(backbone, optim)}
    names = {id(p): n for n, p in backbone.named_parameters()}
    no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
    decay = {names[id(p)] for p in groups["default"]["params"]}
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["default"]["weight_decay"] == 0.01
    assert all(n.endswith(".bias") or "ln" in n or "norm" in n or "embedding" in n for n in no_decay)
    assert {"model.text_embedding.weight", "model.mel_embedding.weight",
            "model.mel_pos_embedding.emb.weight"} <= no_decay
    assert "model.gpt.h.0.attn.c_attn.weight" in decay and not any(n.endswith(".bias") for n in decay)
    opt = build_optimizer(optim, torch_param_groups(backbone, optim), full_state=embedding_weights(backbone))
    assert [tuple(g["betas"]) for g in opt.param_groups] == [(0.9, 0.96)] * 2
    for p in backbone.parameters():
        p.grad = torch.ones_like(p) * 1e-3
    opt.step()
    m = backbone.model
    assert opt.state[m.mel_embedding.weight]["state1"].dtype == torch.float32
    assert opt.state[m.text_pos_embedding.emb.weight]["state1"].dtype == torch.float32
    assert opt.state[m.gpt.h[0].mlp.c_fc.weight]["state1"].dtype == torch.uint8
