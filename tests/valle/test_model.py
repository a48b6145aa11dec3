"""VALL-E v5 AR+NAR network: key layout vs the release, training targets, overfit, LoRA, export, generate."""
from __future__ import annotations

import json

import pytest
import torch

from audiotrain_valle.ar_nar import ARNAR, IGNORE_INDEX, LORA_TARGETS, level_weights, sample_levels
from audiotrain.models.state_dict import StateDictMismatch
from audiotrain_valle.checkpoint import load_exported, read_exported, save_exported
from audiotrain_valle.presets import PRESETS, get_preset, resolve_config, to_original_config
from tests.ref_keys import ref_keys

A = 64  # audio tokens of the tiny preset (Codec.tiny)


def _tiny(seed: int = 0, **over) -> ARNAR:
    torch.manual_seed(seed)
    return ARNAR({"preset": "tiny", **over})


def _batch(seed: int = 0, lens=((7, 5, 9), (11, 3, 4)), levels: int = 8, a: int = A):
    """Two samples with different (phn, prompt, resp) lengths."""
    g = torch.Generator().manual_seed(seed)
    phns = [torch.randint(3, 256, (lp,), generator=g) for lp, _, _ in lens]
    proms = [torch.randint(0, a, (tp, levels), generator=g) for _, tp, _ in lens]
    resps = [torch.randint(0, a, (t, levels), generator=g) for _, _, t in lens]
    return phns, proms, resps, torch.tensor([0, 1])


def test_full_preset_matches_release_keys():
    ref = ref_keys("valle_ar_nar_full")
    with torch.device("meta"):
        model = ARNAR("full")
    sd = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert len(sd) == ref["num_keys"] == 155
    assert sd == ref["keys"] and list(sd) == list(ref["keys"])
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"] == 237_968_641
    # the original config of the reference (size "full", experimental flags of data/config.yaml) resolves to "full"
    assert resolve_config(ref["config"]) == get_preset("full")
    assert resolve_config(to_original_config(get_preset("tiny"))) == get_preset("tiny")
    assert {k: PRESETS[k]["dim"] for k in PRESETS} == {"tiny": 32, "quarter": 256, "half": 512, "full": 1024}


def test_version_6_checkpoint_has_the_text_head_and_loads_and_trains():
    """Version 6 adds one output head over the raw-text vocabulary, ``classifiers.proj.10`` at full size: a v6
    state dict (the v5 release keys plus that head) builds on the meta device with exactly those keys, and a
    v6 checkpoint at tiny size loads strictly and trains (the head is held, as the stt head is)."""
    ref = ref_keys("valle_ar_nar_full")
    v6 = {**ref["config"], "version": 6}
    with torch.device("meta"):
        model = ARNAR(v6)
    sd = {k: list(v.shape) for k, v in model.state_dict().items()}
    extra = {k: sd[k] for k in set(sd) - set(ref["keys"])}
    assert extra == {"classifiers.proj.10.weight": [8575, 1024], "classifiers.proj.10.bias": [8575]}
    assert {k: sd[k] for k in ref["keys"]} == ref["keys"] and len(sd) == 157
    src, dst = _tiny(0, version=6), _tiny(1, version=6)
    dst.load_state_dict(src.state_dict(), strict=True)
    assert dst.classifiers.proj[-1].weight.shape[0] == dst.config["text_tokens"]
    phns, proms, resps, langs = _batch()
    loss = dst(phns, proms, resps, langs, levels=[0, 1])["loss"]
    loss.backward()
    assert torch.isfinite(loss) and dst.classifiers.proj[-1].weight.grad is None
    assert dst.classifiers.proj[0].weight.grad.abs().sum() > 0


def test_forward_scores_resp_segment_only_and_levels_distribution():
    model = _tiny()
    phns, proms, resps, langs = _batch()
    for levels in ([0, 3], [5, 0], [1, 7]):
        out = model(phns, proms, resps, langs, levels=levels)
        assert set(out) == {"loss", "nll", "acc"} and torch.isfinite(out["loss"]) and out["loss"] is out["nll"]
        assert 0.0 <= float(out["acc"]) <= 1.0 and not out["acc"].requires_grad
        packed = model.build_inputs(phns, proms, resps, langs, levels)
        scored = packed.targets != IGNORE_INDEX
        assert int(scored.sum()) == sum(r.shape[0] for r in resps) + levels.count(0)
        for b, lv in enumerate(levels):
            want = torch.cat([resps[b][:, 0], torch.tensor([A])]) if lv == 0 else resps[b][:, lv]
            assert torch.equal(packed.targets[b][scored[b]], want)
            # every scored position lies in (or, for the AR, right before) the resp segment
            first = int(scored[b].nonzero()[0])
            assert first == packed.resp_start[b] - (1 if lv == 0 else 0)
        # other prompts and phonemes change the inputs, never which tokens are scored or their targets
        other = model.build_inputs([p.flip(0) for p in phns], [(p + 1) % A for p in proms], resps, langs, levels)
        assert torch.equal(other.targets, packed.targets)
        # padding is invisible: the batch loss is the mean of the per-sample losses
        singles = [model([phns[b]], [proms[b]], [resps[b]], langs[b:b + 1], levels=[levels[b]])["loss"] for b in range(2)]
        torch.testing.assert_close(out["loss"], torch.stack(singles).mean(), rtol=1e-5, atol=1e-5)
    # sampled levels: P(i) = (8 - i) / 36
    draws = sample_levels(36000, 8, "auto", torch.Generator().manual_seed(1))
    freq = torch.bincount(draws, minlength=8).double() / 36000
    expected = torch.arange(8, 0, -1).double() / 36
    assert float((freq - expected).abs().max()) < 0.01
    assert torch.equal(level_weights(4, [1, 1, 3]), torch.tensor([0.0, 2.0, 0.0, 1.0], dtype=torch.float64))


def test_stack_equals_hf_llama():
    """Same weights, same numbers as transformers' LlamaModel (gelu GeGLU, RoPE, RMSNorm, padding)."""
    import transformers

    from audiotrain_valle.llama import LlamaModel

    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                   num_key_value_heads=2, max_position_embeddings=22750, hidden_act="gelu",
                                   rms_norm_eps=1e-6, rope_theta=10000.0, vocab_size=1, bos_token_id=None,
                                   eos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    hf = transformers.LlamaModel(cfg).eval()
    ours = LlamaModel(32, 2, 2, 128).eval()
    ours.load_state_dict({k: v for k, v in hf.state_dict().items() if not k.startswith("embed_tokens")}, strict=True)
    x = torch.randn(2, 9, 32)
    pos = torch.tensor([[0, 1, 2, 3, 0, 1, 0, 1, 2], [0, 1, 2, 0, 1, 2, 3, 4, 5]])
    mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    with torch.no_grad():
        want = hf(inputs_embeds=x, position_ids=pos, attention_mask=mask).last_hidden_state
        got = ours(x, pos, mask.sum(1))
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1, :6], want[1, :6], rtol=1e-5, atol=1e-6)


def test_segments_positions_and_summed_embeddings():
    model = _tiny()
    phns, proms, resps, langs = _batch(lens=((6, 4, 5),), levels=8)
    lp, tp, t = 6, 4, 5
    seg_pos = lambda n: list(range(n))  # noqa: E731
    for lv in (0, 3):
        packed = model.build_inputs(phns, proms, resps, langs[:1], [lv])
        n_resp = t + 1 if lv == 0 else t
        want = seg_pos(lp + 1) + seg_pos(2) + seg_pos(2) + seg_pos(tp + 1) + seg_pos(n_resp)
        assert packed.position_ids[0].tolist() == want
        e, r0 = packed.embeds[0], packed.resp_start[0]
        assert r0 == lp + 1 + 2 + 2 + tp + 1
        torch.testing.assert_close(e[lp], model.sep)  # the sep after the phonemes
        p0 = lp + 5
        k = max(lv, 1)
        prom_want = sum(model.proms_emb.embeddings[j].weight[proms[0][:, j]] for j in range(k))
        torch.testing.assert_close(e[p0:p0 + tp], prom_want)
        if lv == 0:  # AR: table AR:0:0 over level 0 plus the embedded stop token
            seq = torch.cat([resps[0][:, 0], torch.tensor([A])])
            torch.testing.assert_close(e[r0:r0 + t + 1], model.resps_emb.embeddings[0].weight[seq])
        else:  # NAR level 3: tables NAR:0:1..NAR:2:3 over levels 0..2
            want_e = sum(model.resps_emb.embeddings[1 + j].weight[resps[0][:, j]] for j in range(lv))
            torch.testing.assert_close(e[r0:r0 + t], want_e)


def _oracle_model(a: int = 16) -> ARNAR:
    """Heads that read the class straight off the hidden state (logit = 50 * hidden[class])."""
    model = _tiny(audio_tokens=a, resp_levels=2)
    with torch.no_grad():
        for lin in model.classifiers.proj:
            lin.weight.zero_()
            lin.bias.zero_()
            n = min(lin.out_features, lin.in_features)
            lin.weight[:n, :n] = 50 * torch.eye(n)
    return model


def test_ar_shift_with_oracle_heads():
    a = 16
    model = _oracle_model(a)
    phns, proms, resps, langs = _batch(lens=((5, 3, 6), (4, 2, 9)), levels=2, a=a)
    for level in (0, 1):
        packed = model.build_inputs(phns, proms, resps, langs, [level, level])
        b_, s, d = packed.embeds.shape
        # hand-built sequence of resp-side tokens per position (-1 = not a resp token)
        tokens = torch.full((b_, s), -1, dtype=torch.long)
        for b in range(b_):
            seq = torch.cat([resps[b][:, 0], torch.tensor([a])]) if level == 0 else resps[b][:, 1]
            tokens[b, packed.resp_start[b]: packed.resp_start[b] + seq.shape[0]] = seq
        next_tok = torch.cat([tokens[:, 1:], torch.full((b_, 1), -1)], dim=1)

        def onehot(tok):
            h = torch.zeros(b_, s, d)
            idx = tok.clamp(min=0)
            h.scatter_(2, idx[..., None], (tok >= 0).float()[..., None])
            return h

        shifted, unshifted = onehot(next_tok), onehot(tokens)
        good, bad = (shifted, unshifted) if level == 0 else (unshifted, shifted)
        ok = model.loss_from_hidden(good, packed)
        wrong = model.loss_from_hidden(bad, packed)
        assert float(ok["nll"].detach()) < 1e-6 and float(ok["acc"]) == 1.0
        assert float(wrong["nll"].detach()) > 5.0


def test_ar_segment_loss_drops_only_the_first_code_as_target():
    """model.ar_loss=segment (vall-e's per-segment loss): the AR targets are the resp segment shifted inside
    itself - resp[1:] + stop at the resp positions, so the sep no longer predicts resp[0]; the NAR is unchanged."""
    model = _tiny()
    phns, proms, resps, langs = _batch()
    seq_ar = model.build_inputs(phns, proms, resps, langs, [0, 1])
    model.ar_loss = "segment"
    seg_ar = model.build_inputs(phns, proms, resps, langs, [0, 1])
    for b, level in enumerate((0, 1)):
        r0, codes = seg_ar.resp_start[b], resps[b]
        scored = (seg_ar.targets[b] != IGNORE_INDEX).nonzero().flatten().tolist()
        if level == 0:
            want = torch.cat([codes[1:, 0], torch.tensor([A])])  # c1 .. c_{T-1}, stop
            assert scored == list(range(r0, r0 + codes.shape[0]))
            assert torch.equal(seg_ar.targets[b, scored], want)
            before = (seq_ar.targets[b] != IGNORE_INDEX).nonzero().flatten().tolist()
            assert before == list(range(r0 - 1, r0 + codes.shape[0]))  # one more: the sep predicts c0
        else:
            assert torch.equal(seg_ar.targets[b], seq_ar.targets[b])
    loss = model(phns, proms, resps, langs, levels=[0, 0])["loss"]
    assert torch.isfinite(loss)


def test_ar_loss_is_set_from_the_config_and_checked():
    from audiotrain.plugins import registry
    from tests.conftest import compose

    plugin = registry.get("valle")
    cfg = compose(["model=valle", "model.preset=tiny", "model.ar_loss=segment"])
    assert plugin.validate(cfg) == [] and plugin.build_backbone(cfg).model.ar_loss == "segment"
    assert registry.get("valle").build_backbone(compose(["model=valle", "model.preset=tiny"])).model.ar_loss == "sequence"
    problems = plugin.validate(compose(["model=valle", "model.preset=tiny", "model.ar_loss=shifted"]))
    assert len(problems) == 1 and problems[0].startswith("model.ar_loss=shifted must be sequence")


@pytest.mark.slow  # over 20 s on 2 cores: make test runs it, make test-fast leaves it out
def test_overfit_one_utterance_top10_accuracy():
    """The "Try Me" check: memorise one utterance, then greedy AR+NAR decoding gives it back."""
    torch.manual_seed(0)
    model = _tiny()
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, A, (30, 8), generator=g)
    prom = torch.randint(0, A, (10, 8), generator=g)
    phn = torch.randint(3, 256, (12,), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    bs, acc, nll, step = 4, 0.0, float("inf"), 0
    for step in range(1, 301):
        loss = model([phn] * bs, [prom] * bs, [codes] * bs, [0] * bs, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:  # score every level of the utterance
            with torch.no_grad():
                out = model([phn] * 8, [prom] * 8, [codes] * 8, [0] * 8, levels=torch.arange(8))
            acc, nll = float(out["acc"]), float(out["nll"])
            if acc >= 0.99 and nll < 0.3:
                break
    assert acc >= 0.9, f"top-10 accuracy {acc:.3f} after {step} steps"
    assert nll < 0.3, f"nll {nll:.3f} after {step} steps"
    gen = model.generate(phn, prom, 0, max_ar_steps=40, ar_temperature=0.0)
    assert gen.shape == (30, 8)  # the AR stops exactly after the 30 frames it learnt
    assert float((gen == codes).float().mean()) >= 0.95


def test_lora_policy_targets_six_linears_per_layer():
    from peft import LoraConfig, inject_adapter_in_model

    model = _tiny()
    phns, proms, resps, langs = _batch()
    before = model(phns, proms, resps, langs, levels=[0, 2])["loss"].detach()
    base = {n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    r = 4
    model = inject_adapter_in_model(LoraConfig(r=r, target_modules=list(LORA_TARGETS)), model)
    adapted = sorted({n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A." in n})
    n_layers = PRESETS["tiny"]["layers"]
    assert len(adapted) == 6 * n_layers
    assert not any("k_proj" in n or "classifiers" in n or "_emb" in n for n in adapted)
    for i in range(n_layers):
        assert sum(n.startswith(f"model.layers.{i}.") for n in adapted) == 6
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == r * sum(base[n][0] + base[n][1] for n in adapted) == r * n_layers * (3 * (32 + 32) + 3 * (32 + 128))
    after = model(phns, proms, resps, langs, levels=[0, 2])["loss"]
    assert torch.equal(before, after.detach())  # B = 0: the adapted model starts as the base model


@pytest.mark.parametrize("suffix", [".sft", ".pth"])
def test_export_round_trip_bit_exact(tmp_path, suffix):
    model = _tiny(seed=3).eval()
    symmap = {"<unk>": 0, "<bos>": 1, "</eos>": 2, "ə": 17}
    path = save_exported(model, tmp_path / f"fp32{suffix}", symmap, stats={"global_step": 7})
    loaded, sm, cfg = load_exported(path)
    assert sm == symmap and cfg["size"]["dim"] == 32 and loaded.config == model.config
    phns, proms, resps, langs = _batch()
    for levels in ([0, 4], [7, 1]):
        with torch.no_grad():
            a = model(phns, proms, resps, langs, levels=levels)
            b = loaded(phns, proms, resps, langs, levels=levels)
        assert torch.equal(a["loss"], b["loss"]) and torch.equal(a["acc"], b["acc"])
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    state, _, userdata, stats = read_exported(path)
    assert stats == {"global_step": 7} and userdata["symmap"] == symmap and "sep" in state


def test_export_variants_and_mismatch_error(tmp_path):
    from safetensors.torch import save_file

    model = _tiny(seed=4)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(to_original_config(model.config)), "userdata": json.dumps({"symmap": {"a": 5}})}
    save_file(state, str(tmp_path / "plain.sft"), metadata=meta)  # keys without the module. prefix
    loaded, sm, _ = load_exported(tmp_path / "plain.sft")
    assert sm == {"a": 5} and torch.equal(loaded.sep, model.sep)
    half, _, _ = load_exported(save_exported(model, tmp_path / "fp16.sft", {}, dtype=torch.float16))
    assert half.sep.dtype == torch.float32 and torch.equal(half.sep, model.sep.half().float())
    bad = dict(state)
    bad.pop("model.norm.weight")
    bad["model.layers.9.mlp.up_proj.weight"] = torch.zeros(2, 2)
    bad["sep"] = torch.zeros(3)
    save_file({f"module.{k}": v for k, v in bad.items()}, str(tmp_path / "bad.sft"), metadata=meta)
    with pytest.raises(StateDictMismatch) as e:
        load_exported(tmp_path / "bad.sft")
    msg = str(e.value)
    assert "1 missing keys (e.g. model.norm.weight)" in msg and "1 unexpected keys (e.g. model.layers.9.mlp.up_proj.weight)" in msg
    assert "1 shape mismatches" in msg and "sep [3] vs [32]" in msg and msg.count(".") >= 1 and "\n" not in msg


def test_generate_shapes_and_consistency_with_training_pass():
    model = _tiny(seed=5)
    phns, proms, resps, langs = _batch(seed=2)
    gen = lambda s: model.generate(phns[0], proms[0], 0, max_ar_steps=12, ar_temperature=1.0,  # noqa: E731
                                   generator=torch.Generator().manual_seed(s))
    out = gen(0)
    assert out.dtype == torch.long and out.dim() == 2 and out.shape[1] == 8
    assert 1 <= out.shape[0] <= 12 and int(out.max()) < A and int(out.min()) >= 0
    assert torch.equal(out, gen(0)) and model.training
    # causal: the logits generate() uses after t codes equal the training pass at position t
    model.eval()
    codes = resps[0]
    packed = model.build_inputs(phns[:1], proms[:1], [codes], langs[:1], [0])
    with torch.no_grad():
        hidden = model.model(packed.embeds, packed.position_ids, packed.lengths)[0]
        r0 = packed.resp_start[0]
        train_logits = model.classifiers(hidden[r0 - 1: r0 - 1 + codes.shape[0]], "AR:0:0")
        for t in (0, 3, codes.shape[0] - 1):
            step = model._logits(phns[0], proms[0], 0, 0, codes[:t, :1], last_only=True)
            torch.testing.assert_close(step, train_logits[t], rtol=1e-4, atol=1e-5)
        nar = model._logits(phns[0], proms[0], 0, 2, codes[:, :2], last_only=False)
        packed = model.build_inputs(phns[:1], proms[:1], [codes], langs[:1], [2])
        hidden = model.model(packed.embeds, packed.position_ids, packed.lengths)[0]
        torch.testing.assert_close(nar, model.classifiers(hidden[packed.resp_start[0]:], "NAR:1:2"), rtol=1e-4, atol=1e-5)
