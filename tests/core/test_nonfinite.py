"""A run that diverges stops and keeps what was good (issue 13, point 3), for every plugin.

* lr=1e30 through the real CLI: exit 2, one message naming the first bad step and optimizer.lr, no final adapter,
  only finite values in every file written, the named last-good adapter on disk, MLflow run FAILED with the reason;
* one NaN step in-process (ACE-Step and VALL-E tiny): the weights and the optimizer state after it equal those
  before it bit for bit, it is counted once, and training finishes;
* every saver refuses NaN weights with a sentence and writes nothing;
* a diverged sweep job is one of the sweep's results.
The step rule alone, per precision and backend, is in test_nonfinite_step.py.
"""
from __future__ import annotations

import copy
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from audiotrain.train import module as module_mod
from audiotrain.train.finite import NonFiniteWeights, check_finite, nonfinite_names
from audiotrain.train.module import TrainModule
from tests.core.conftest import cli_env
from tests.valle.conftest import valle_cfg, voice_dir  # noqa: F401  (fixtures of the VALL-E case)


def _all_finite_files(root: Path) -> list[Path]:
    """Every weights/checkpoint file under ``root``, each asserted to hold only finite values."""
    files = sorted([*root.rglob("*.safetensors"), *root.rglob("*.ckpt"), *root.rglob("*.sft")])
    for f in files:
        state = load_file(str(f)) if f.suffix in (".safetensors", ".sft") else \
            torch.load(f, map_location="cpu", weights_only=False)
        assert nonfinite_names(state if f.suffix != ".ckpt" else state["state_dict"]) == [], f
        if f.suffix == ".ckpt":  # the optimizer state too: a skipped step never reached it
            for s in state["optimizer_states"]:
                assert nonfinite_names({str(k): v for k, v in s["state"].items()}) == [], f
    return files


@pytest.mark.slow  # the CLI: a tiny ACE-Step run to its divergence, ~20 s on 2 idle cores
def test_diverging_run_stops_keeps_the_last_good_files_and_fails(song_dir, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "audiotrain.cli.main", "model=acestep", f"data={song_dir}", "debug=smoke",
         "optimizer.lr=1e30", "trainer.max_steps=30", "trainer.every_n_train_steps=2", "trainer.every_plot_step=0",
         "trainer.stdin_control=false", "trainer.progress_bar=false", "trainer.max_nonfinite_steps=4"],
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Done." not in out
    m = re.search(r"Training diverged: .*?for 4 optimizer steps in a row \(trainer.max_nonfinite_steps=4\), from "
                  r"step (\d+) \(loss nan\) to step (\d+); .*the last good checkpoint is (\S+) and the last good "
                  r"adapter (\S+) \(no final adapter was written\); to try next: lower optimizer.lr \(now 1e\+30\), "
                  r"or a smaller trainer.gradient_clip_val \(now 0.5\), in a new run \(resume=auto and ckpt_path= continue "
                  r"with the checkpoint's optimizer state, its learning rate included\)\.", out)
    assert m, out[-3000:]
    first, last, ckpt, adapter = int(m.group(1)), int(m.group(2)), Path(m.group(3)), Path(m.group(4))
    assert last == first + 3 and first >= 1
    assert len(re.findall(r"\[nonfinite\] step \d+: loss nan: skipped", out)) == 4
    run_dir = ckpt.parent.parent
    assert ckpt.is_file() and ckpt.name == f"step={first - 1 - (first - 1) % 2}.ckpt"
    assert adapter.is_dir() and adapter.name == f"step_{first - 1 - (first - 1) % 2}"
    assert not (run_dir / "adapters" / "final").exists()
    saved_steps = sorted(int(p.name.split("_")[1]) for p in (run_dir / "adapters").iterdir())
    assert saved_steps and max(saved_steps) < first  # nothing saved on or after the first bad step
    files = _all_finite_files(run_dir)
    assert any(f.suffix == ".ckpt" for f in files) and any(f.suffix != ".ckpt" for f in files)
    last_ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last_ckpt["global_step"] < first

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FAILED"
    assert run.data.tags["audiotrain.failure"].startswith("Training diverged")
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("Training diverged: ") and f"from step {first}" in note
    assert "\n\naudiotrain " in note  # the command (and bad-input report) the description held before
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train/nonfinite_steps")] == [1, 2, 3, 4]
    assert all(math.isfinite(m.value) for m in client.get_metric_history(run.info.run_id, "train/loss"))


@pytest.mark.slow  # a 2-job sweep through the CLI, then the same command again
def test_a_diverged_sweep_job_is_a_result_and_the_sweep_goes_on(song_dir, tmp_path):
    import json

    argv = [sys.executable, "-m", "audiotrain.cli.main", "-m", "model=acestep", f"data={song_dir}", "debug=smoke",
            "optimizer.lr=1e30,1e-4", "trainer.max_steps=6", "trainer.every_n_train_steps=2",
            "trainer.max_nonfinite_steps=2", "trainer.every_plot_step=0", "trainer.stdin_control=false",
            "trainer.progress_bar=false"]
    first = subprocess.run(argv, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=900)
    out = first.stdout + first.stderr
    assert first.returncode == 2, out[-3000:]
    assert "Traceback" not in out
    assert re.search(r"audiotrain: sweep finished, but job\(s\) 0 diverged \(NaN/Inf losses\)", out), out[-2000:]
    (sweep_dir,) = (tmp_path / "exps" / "logs").glob("*/sweep_*")
    status = {n: json.loads((sweep_dir / str(n) / "job_status.json").read_text()) for n in (0, 1)}
    assert status[0]["status"] == "DIVERGED" and status[0]["error"].startswith("Training diverged")
    assert status[1]["status"] == "COMPLETED"
    assert (sweep_dir / "1" / "adapters" / "final").is_dir() and not (sweep_dir / "0" / "adapters" / "final").exists()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = {r.info.run_name: r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])}
    assert runs["optimizer.lr=1e+30"].info.status == "FAILED" and runs["optimizer.lr=0.0001"].info.status == "FINISHED"
    parent = next(r for r in runs.values() if r.data.tags.get("audiotrain.sweep") == "parent")
    assert parent.info.status == "FAILED" and parent.data.tags["job.0.status"] == "DIVERGED"

    again = subprocess.run(argv, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=900)
    assert again.returncode == 2, (again.stdout + again.stderr)[-3000:]
    assert "Sweep job 0 (optimizer.lr=1e+30) diverged before: skipped." in again.stderr
    assert "Sweep job 1 (optimizer.lr=0.0001) finished before" in again.stderr


# ---- one bad step, in process, for every plugin -------------------------------------------------------
BAD_STEP = 2  # the optimizer step (global_step before it) whose loss is NaN


def _snapshot(module: TrainModule, optimizer) -> tuple[dict, dict]:
    weights = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    inner = getattr(optimizer, "_optimizer", optimizer)  # DeepSpeed's ZeRO optimizers keep their state elsewhere
    return weights, copy.deepcopy(inner.state_dict()) if isinstance(inner, torch.optim.Optimizer) else None


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture
def one_nan_step(monkeypatch):
    """Poisons the loss of optimizer step BAD_STEP (every micro-batch of it); records the weights and optimizer
    state around every step."""
    seen: dict[int, dict] = {}
    real_step = TrainModule.training_step

    def training_step(self, batch, batch_idx):
        if int(self.global_step) != BAD_STEP:
            return real_step(self, batch, batch_idx)
        real = self.backbone.training_losses

        def poisoned(*a, **k):
            out = real(*a, **k)
            return {**out, "loss": out["loss"] * float("nan")}

        self.backbone.training_losses = poisoned
        try:
            return real_step(self, batch, batch_idx)
        finally:
            del self.backbone.training_losses

    real_guarded = module_mod.guarded_step

    def guarded(module, optimizer, closure):
        step = int(module.global_step)
        before = _snapshot(module, optimizer)
        real_guarded(module, optimizer, closure)
        seen[step] = {"before": before, "after": _snapshot(module, optimizer), "skipped": module.step_nonfinite}

    monkeypatch.setattr(TrainModule, "training_step", training_step)
    monkeypatch.setattr(module_mod, "guarded_step", guarded)
    return seen


PLUGIN_CFG = {"acestep": "tiny_cfg", "valle": "valle_cfg"}


SLOW = pytest.mark.slow  # a second tiny training run of the same rule


@pytest.mark.parametrize("plugin, extra", [
    ("acestep", ()),
    pytest.param("valle", (), marks=SLOW),
    pytest.param("acestep", ("trainer.accumulate_grad_batches=2", "precision=bf16-mixed",
                             "trainer.gradient_clip_algorithm=value"), marks=SLOW),
    pytest.param("valle", ("trainer.accumulate_grad_batches=2", "precision=bf16-mixed"), marks=SLOW),
], ids=["acestep-fp32", "valle-fp32", "acestep-accum2-bf16-value-clip", "valle-accum2-bf16"])
def test_one_nan_step_is_skipped_and_training_goes_on(plugin, extra, request, one_nan_step):
    from audiotrain.train.run import train

    cfg = request.getfixturevalue(PLUGIN_CFG[plugin])(
        "trainer.max_steps=5", "trainer.every_n_train_steps=1", "scheduler=constant", "optimizer.lr=1e-3",
        "trainer.stdin_control=false", *extra)
    summary = train(cfg)
    assert summary["steps"] == 5 and summary["completed"]
    assert summary["nonfinite_steps"] == 1
    assert sorted(one_nan_step) == [0, 1, 2, 3, 4]
    assert [one_nan_step[s]["skipped"] for s in range(5)] == [False, False, True, False, False]
    bad = one_nan_step[BAD_STEP]
    assert _same(bad["before"][0], bad["after"][0])  # weights, bit for bit
    assert _same(bad["before"][1], bad["after"][1])  # optimizer state (AdamW moments, step counts), bit for bit
    good = one_nan_step[BAD_STEP + 1]
    assert not _same(good["before"][0], good["after"][0])  # the next step trains again
    assert _same(good["before"][0], bad["after"][0])
    run_dir = Path(summary["run_dir"])
    assert (run_dir / "adapters" / "final").is_dir()
    adapters = sorted(p.name for p in (run_dir / "adapters").iterdir())
    assert f"step_{BAD_STEP + 1}" not in adapters and f"step_{BAD_STEP + 2}" in adapters  # no save on a bad step
    assert len(_all_finite_files(run_dir)) > 0


# ---- the savers refuse NaN weights ----------------------------------------------------------------------
def test_check_finite_names_the_bad_tensors():
    good = {"a": torch.ones(3), "n": {"b": torch.zeros(2)}, "i": torch.arange(3)}
    check_finite(good, "x")
    bad = {**good, "n": {"b": torch.tensor([1.0, float("nan")])}, "c": torch.tensor([float("inf")]).half()}
    assert nonfinite_names(bad) == ["n.b", "c"]
    with pytest.raises(NonFiniteWeights, match=r"Not writing the adapter out: 2 weight tensor\(s\) hold NaN/Inf "
                                               r"values \(n\.b, c\)"):
        check_finite(bad, "the adapter out")


def test_checkpoint_writer_refuses_nan_weights(tmp_path):
    from audiotrain.train.checkpoint_io import DirectCheckpointIO

    io = DirectCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "global_step": 1}, tmp_path / "good.ckpt")
    assert (tmp_path / "good.ckpt").is_file()
    with pytest.raises(NonFiniteWeights, match=r"Not writing the checkpoint .*bad\.ckpt: 1 weight tensor\(s\) "
                                               r"hold NaN/Inf values \(backbone\.w\)"):
        io.save_checkpoint({"state_dict": {"backbone.w": torch.tensor([float("nan")])}}, tmp_path / "bad.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.ckpt"]  # nothing, not even a temporary file


def test_adapter_writer_refuses_nan_weights(tiny_cfg, tmp_path):
    from audiotrain.plugins import registry
    from audiotrain.train.model_setup import adapter_writer, build_model

    cfg = tiny_cfg()
    plugin = registry.get("acestep")
    built = build_model(cfg, plugin, report=False)
    save = adapter_writer(built, plugin, cfg)
    save(tmp_path / "ok")
    assert (tmp_path / "ok" / "peft").is_dir()
    name, param = next((n, p) for n, p in built.backbone.adapter_root().named_parameters() if p.requires_grad)
    with torch.no_grad():
        param.view(-1)[0] = float("inf")
    with pytest.raises(NonFiniteWeights, match=rf"Not writing the adapter .*bad: 1 weight tensor\(s\) hold NaN/Inf "
                                               rf"values \({re.escape(name)}\)"):
        save(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow  # DeepSpeed on CPU: two tiny runs
@pytest.mark.parametrize("extra", [("backend.stage=2", "precision=bf16-mixed"), ("backend.stage=0", "precision=32")],
                         ids=["zero2-bf16", "zero0-fp32"])
def test_one_nan_step_under_deepspeed_leaves_the_weights(extra, tiny_cfg, one_nan_step):
    from audiotrain.train.run import train

    summary = train(tiny_cfg("backend=deepspeed", "trainer.max_steps=4", "trainer.every_n_train_steps=1",
                             "scheduler=constant", "optimizer.lr=1e-3", "trainer.stdin_control=false", *extra))
    assert summary["steps"] == 4 and summary["completed"] and summary["nonfinite_steps"] == 1
    bad, good = one_nan_step[BAD_STEP], one_nan_step[BAD_STEP + 1]
    assert bad["skipped"] and _same(bad["before"][0], bad["after"][0])  # the weights, bit for bit
    assert _same(bad["before"][1], bad["after"][1])  # the torch optimizer's state at stage 0 (ZeRO's: None)
    assert (bad["before"][1] is None) == ("backend.stage=2" in extra)
    assert not good["skipped"] and not _same(good["before"][0], good["after"][0])
    assert len(_all_finite_files(Path(summary["run_dir"]) / "adapters")) > 0


@pytest.mark.slow  # three tiny runs
def test_a_run_with_a_skipped_step_resumes_exactly(tiny_cfg, one_nan_step):
    """Steps 0-5 with step 2 poisoned, against steps 0-2 (the last one skipped), saved at the end, resumed to 6."""
    from audiotrain.train.run import train

    common = ("trainer.every_n_train_steps=3", "dataset.repeat_count=2", "optimizer.lr=1e-3",
              "trainer.stdin_control=false")
    full = train(tiny_cfg("trainer.max_steps=6", *common, run="full"))
    half = train(tiny_cfg("trainer.max_steps=3", *common, run="half"))
    ckpt = Path(half["run_dir"]) / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 3
    resumed = train(tiny_cfg("trainer.max_steps=6", *common, f"ckpt_path={ckpt}", run="ignored"))
    assert (full["nonfinite_steps"], half["nonfinite_steps"], resumed["nonfinite_steps"]) == (1, 1, 1)
    a = load_file(f"{full['adapter_dir']}/peft/adapter_model.safetensors")
    b = load_file(f"{resumed['adapter_dir']}/peft/adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
