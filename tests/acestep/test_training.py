"""Training through the real path (config → data → cache → Lightning) on the tiny preset, CPU, seeded."""
from __future__ import annotations

import shutil

import torch
from safetensors.torch import load_file

from audiotrain.train.run import train


def losses_of(summary_run_dir):
    import json
    from pathlib import Path

    return json.loads((Path(summary_run_dir) / "summary.json").read_text())


def test_cache_on_and_off_give_the_same_loss(tiny_cfg):
    on = train(tiny_cfg("trainer.max_steps=4", "cache=true", run="on"))
    off = train(tiny_cfg("trainer.max_steps=4", "cache=false", run="off"))
    assert on["steps"] == off["steps"] == 4
    a = load_file(f"{on['adapter_dir']}/peft/adapter_model.safetensors")
    b = load_file(f"{off['adapter_dir']}/peft/adapter_model.safetensors")
    assert abs(on["first_loss"] - off["first_loss"]) < 1e-6
    assert abs(on["last_loss"] - off["last_loss"]) < 1e-5
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_second_run_reuses_the_cache_without_loading_encoders(tiny_cfg, monkeypatch):
    train(tiny_cfg("trainer.max_steps=1", run="warm"))
    from audiotrain_acestep import music_dcae, text_encoder

    def boom(*a, **k):
        raise AssertionError("a frozen encoder was loaded although every feature is cached")

    monkeypatch.setattr(music_dcae.MusicDCAE, "from_preset", boom)
    monkeypatch.setattr(text_encoder.TextEncoder, "tiny", boom)
    summary = train(tiny_cfg("trainer.max_steps=2", run="cached"))
    assert summary["steps"] == 2


def test_resume_is_identical_to_an_uninterrupted_run(tiny_cfg, tmp_path):
    common = ("trainer.every_n_train_steps=3", "dataset.repeat_count=2", "optimizer.lr=1e-3")
    full = train(tiny_cfg("trainer.max_steps=6", *common, run="full"))
    half = train(tiny_cfg("trainer.max_steps=3", *common, run="half"))
    ckpt = f"{half['run_dir']}/checkpoints/last.ckpt"
    resumed = train(tiny_cfg("trainer.max_steps=6", *common, f"ckpt_path={ckpt}", run="ignored"))
    assert resumed["run_dir"] == half["run_dir"] and resumed["steps"] == 6
    a = load_file(f"{full['adapter_dir']}/peft/adapter_model.safetensors")
    b = load_file(f"{resumed['adapter_dir']}/peft/adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a LoRA run's checkpoint holds only the trainable weights
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert state and all("lora_" in k for k in state)


def test_loss_falls_on_demo_data(tiny_cfg):
    s = train(tiny_cfg("trainer.max_steps=120", "optimizer.lr=5e-3", "scheduler=constant", "lora.r=16",
                       "model.text_dropout=0", "model.lyric_dropout=0", "model.speaker_dropout=0", run="fall"))
    from pathlib import Path

    assert (Path(s["adapter_dir"]) / "acestep" / "pytorch_lora_weights.safetensors").is_file()
    (step0, first), (step_end, last) = s["train_fixed_loss"][0], s["train_fixed_loss"][-1]
    assert (step0, step_end) == (0, 120)
    assert last < 0.8 * first, s["train_fixed_loss"]      # fixed examples and noise: only learning moves it
    assert s["loss_end_mean"] < s["loss_start_mean"]


def test_full_finetune_and_keep_last_n(tiny_cfg):
    s = train(tiny_cfg("lora=none", "trainer.max_steps=6", "trainer.every_n_train_steps=1", "trainer.keep_last_n=2",
                       run="full_ft"))
    from pathlib import Path

    ckpts = sorted(p.name for p in (Path(s["run_dir"]) / "checkpoints").glob("step=*.ckpt"))
    assert ckpts == ["step=5.ckpt", "step=6.ckpt"]
    assert (Path(s["adapter_dir"]) / "model.safetensors").is_file()
    assert s["trainable_params"] > 600_000


def test_bf16_mixed_accumulation_and_value_clipping(tiny_cfg):
    import math

    s = train(tiny_cfg("precision=bf16-mixed", "trainer.max_steps=2", "trainer.accumulate_grad_batches=2",
                       "trainer.gradient_clip_algorithm=value", "trainer.gradient_clip_val=0.1", run="bf16"))
    assert s["steps"] == 2 and math.isfinite(s["last_loss"])


def test_two_jobs_building_the_cache_at_once(tiny_cfg, song_dir):
    """Concurrent preparation of the same dataset: both finish, entries are complete and identical."""
    import threading

    from audiotrain.data.cache import FeatureCache
    from audiotrain.data.prepare import prepare_items, resolve_manifest
    from audiotrain.data.report import BadInputReport
    from audiotrain_acestep.plugin import PLUGIN

    cfg = tiny_cfg(run="concurrent")
    results, errors = [], []

    def job():
        try:
            report = BadInputReport()
            manifest = resolve_manifest(str(song_dir), PLUGIN, report)
            toks = PLUGIN.build_encoders(cfg)
            cache = FeatureCache(cfg.cache_dir, "acestep")
            results.append(prepare_items(manifest, PLUGIN, PLUGIN.audio_spec(cfg), toks, cache, report))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [it.fingerprint for it in results[0]] == [it.fingerprint for it in results[1]]
    files = list(FeatureCache(cfg.cache_dir, "acestep").root.glob("*/*.safetensors"))
    assert len(files) == 4 * 4 and not list(FeatureCache(cfg.cache_dir, "acestep").root.glob("*/*.tmp"))


def test_deepspeed_backend_on_cpu_with_lora_and_bf16(tiny_cfg):
    import math

    s = train(tiny_cfg("backend=deepspeed", "precision=bf16-mixed", "trainer.max_steps=3", run="ds"))
    from pathlib import Path

    assert s["steps"] == 3 and math.isfinite(s["last_loss"])
    assert s["final_metrics"]["train/grad_norm"] > 0
    assert (Path(s["adapter_dir"]) / "peft" / "adapter_model.safetensors").is_file()


def test_grad_norm_metric_is_the_same_whether_clipping_measures_it_or_the_callback_does(tiny_cfg):
    """The step's finiteness check (audiotrain.train.nonfinite) measures the total norm once; clipping by norm and
    the metric reuse it, so the callback never measures a second time. Same first step, same gradients: the
    same train/grad_norm whether clipping is by norm or by value."""
    import torch

    from audiotrain.train import callbacks

    measured_by_callback: list[int] = []
    original = torch._foreach_norm

    def counting(*a, **kw):
        import inspect

        if inspect.stack()[1].filename == callbacks.__file__:
            measured_by_callback.append(1)
        return original(*a, **kw)

    torch._foreach_norm = counting
    try:
        by_norm = train(tiny_cfg("trainer.max_steps=1", "trainer.gradient_clip_algorithm=norm", "trainer.gradient_clip_val=0.5",
                                 run="gn_norm"))
        assert measured_by_callback == []  # clipping's own norm was reused: one pass over the gradients
        by_value = train(tiny_cfg("trainer.max_steps=1", "trainer.gradient_clip_algorithm=value",
                                  "trainer.gradient_clip_val=1e9", run="gn_value"))
        assert measured_by_callback == []  # the finiteness check's norm, again
    finally:
        torch._foreach_norm = original
    a, b = by_norm["final_metrics"]["train/grad_norm"], by_value["final_metrics"]["train/grad_norm"]
    assert a > 0 and abs(a - b) <= 1e-5 * max(a, b)


def test_the_sample_decoder_never_joins_the_backbone_state(tiny_cfg):
    """The DCAE decoder is built on the first render; it must not enter state dicts (a full fine-tune's
    checkpoint would then hold decoder keys that a resumed run, which has not rendered yet, refuses)."""
    from audiotrain.plugins import registry

    backbone = registry.get("acestep").build_backbone(tiny_cfg(run="lazy"))
    keys = set(backbone.state_dict())
    decoder = backbone.decoder()
    assert backbone.decoder() is decoder
    assert set(backbone.state_dict()) == keys and "_decoder" not in dict(backbone.named_children())
