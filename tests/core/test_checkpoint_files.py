"""Training checkpoints from strangers (issue 13, points 1 and 2): ``ckpt_path=`` (training and ``mode=eval``),
``resume=auto`` and a sweep job's own checkpoint are read as data, and every wrong file is one sentence.

One tiny real checkpoint per plugin (a 2-step run each, module-scoped) is the source of every file: copies cut
short, emptied, re-saved as a plain state dict or safetensors, with their identity metadata removed or edited.
The wrong-file cases run in-process (``job_setup.resolve_resume``: what ``train`` and ``mode=eval`` call before
anything heavy starts; ``TrainModule.on_load_checkpoint`` for checkpoints without metadata); a few run through
the real CLI to prove the one red line and exit code 2, and that the malicious file's marker never appears."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from audiotrain.errors import UserError
from audiotrain.safe_files import UnsafeFileError
from audiotrain.train import checkpoint_identity
from audiotrain.train.checkpoint_io import DirectCheckpointIO
from audiotrain.train.job_setup import resolve_resume
from tests.conftest import NO_SIGNAL_HANDLERS, compose
from tests.core.conftest import cli_env
from tests.valle.conftest import voice_dir  # noqa: F401  (the VALL-E checkpoint's data)

TINY = ["trainer.max_steps=2", "trainer.every_n_train_steps=2", "trainer.every_plot_step=0",
        "trainer.progress_bar=false", "trainer.stdin_control=false", "trainer.accelerator=cpu", "tracking=none",
        "dataset.num_workers=0", "model.preset=tiny", "lora.r=4", "lora.alpha=8", NO_SIGNAL_HANDLERS]
ACESTEP = ["model=acestep", "dataset.max_duration=4", "model.sample_steps=2", "trainer.sample_prompts=1"]
VALLE = ["model=valle", "trainer.eval_audio=false", "dataset.batch_size=2", "trainer.accumulate_grad_batches=1"]


class Evil:
    """A pickle that runs a command when it is loaded: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _train(tmp: Path, data: Path, plugin: list[str], name: str) -> Path:
    from audiotrain.train.run import train

    cfg = compose([*plugin, f"data={data}", *TINY, f"cache_dir={tmp / 'cache'}", f"paths.log_dir={tmp / 'logs'}",
                   f"paths.run_dir={tmp / 'logs' / name}"])
    summary = train(cfg)
    return Path(summary["run_dir"]) / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def made(tmp_path_factory, song_dir, voice_dir):  # noqa: F811
    """The two real checkpoints (ACE-Step tiny and VALL-E tiny, LoRA r=4 alpha=8, 2 steps) and a folder of files."""
    tmp = tmp_path_factory.mktemp("ckpts")
    return {"acestep": _train(tmp, song_dir, ACESTEP, "acestep"), "valle": _train(tmp, voice_dir, VALLE, "valle"),
            "dir": tmp, "songs": song_dir}


def run_cfg(made, *extra: str, mode: str = "train", exp: str = "exp"):
    """A tiny ACE-Step LoRA r=4 run's config (the one the acestep checkpoint was written by), plus ``extra``."""
    tmp = made["dir"]
    return compose([*ACESTEP, f"data={made['songs']}", *TINY, f"mode={mode}", f"exp_name={exp}",
                    f"cache_dir={tmp / 'cache'}", f"paths.log_dir={tmp / 'runs'}",
                    f"paths.run_dir={tmp / 'runs' / exp / 'now'}", *extra])


def _load(path: Path) -> dict:
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _edited(made, name: str, change) -> Path:
    """A copy of the acestep checkpoint with ``change(checkpoint)`` applied."""
    ckpt = _load(made["acestep"])
    change(ckpt)
    out = made["dir"] / "files" / name
    out.parent.mkdir(exist_ok=True)
    torch.save(ckpt, out)
    return out


def _no_identity(ckpt: dict) -> None:
    del ckpt["audiotrain"][checkpoint_identity.KEY]


def _identity(**changes):
    def change(ckpt: dict) -> None:
        ckpt["audiotrain"][checkpoint_identity.KEY].update(changes)
    return change


def wrong_file(made, kind: str) -> Path:
    """A file of ``kind`` in a fresh folder, named as a checkpoint."""
    d = made["dir"] / "files" / kind
    d.mkdir(parents=True, exist_ok=True)
    path = d / "last.ckpt"
    good = made["acestep"].read_bytes()
    if kind == "missing":
        return d / "nothing.ckpt"
    if kind == "folder":
        (d / "folder.ckpt").mkdir(exist_ok=True)
        return d / "folder.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "safetensors":
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2, 3)}, str(path))
    elif kind == "state_dict":
        torch.save(_load(made["acestep"])["state_dict"], path)
    elif kind == "other_plugin":
        return made["valle"]
    elif kind in ("other_rank", "lora_none"):  # the good checkpoint, into a run with other settings
        return made["acestep"]
    elif kind == "malicious":
        torch.save({"state_dict": {}, "x": Evil(made["dir"] / "MARKER")}, path)
    return path


# (kind, extra overrides of the run, what the sentence says)
KINDS = [
    ("missing", (), "no such file; pass a .ckpt file from a run's checkpoints/ folder."),
    ("folder", (), "is a folder, not a file; pass a .ckpt file"),
    ("empty", (), "is empty (0 bytes, an interrupted copy?); pass a .ckpt file"),
    ("truncated", (), "is truncated (an interrupted download or copy?) and cannot be read"),
    ("text", (), "is a text file, not a training checkpoint: pass a .ckpt file from a run's checkpoints/ folder."),
    ("safetensors", (), "is a safetensors file (exported weights or an adapter), not a training checkpoint"),
    ("state_dict", (), "is a plain state dict (40 tensors, weights only), not a training checkpoint"),
    ("other_plugin", (), "is a checkpoint of valle (preset tiny), not of acestep: pass a checkpoint this plugin "
                         "wrote, or model=valle."),
    ("other_rank", ("lora.r=8", "lora.alpha=16"), "was trained with lora.r=4, this run has lora.r=8: add lora.r=4"),
    ("lora_none", ("lora=none",), "was trained with a LoRA adapter (lora.r=4), this run is a full fine-tune "
                                  "(lora=none): drop lora=none and add lora.r=4"),
    ("malicious", (), "holds pickled Python code (posix.system) that loading would run, so it was not opened; pass "
                      "a .ckpt file from a run's checkpoints/ folder, or — only for a file you made yourself — add "
                      "trust_pickle=true."),
]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("kind,extra,says", KINDS, ids=[k[0] for k in KINDS])
def test_ckpt_path_wrong_file_is_one_sentence(made, mode, kind, extra, says):
    path = wrong_file(made, kind)
    cfg = run_cfg(made, f"ckpt_path={path}", *extra, mode=mode)
    with pytest.raises(UserError) as err:
        resolve_resume(cfg)
    text = str(err.value)
    assert text.startswith(f"ckpt_path={path.resolve()}") and says in text, text
    assert "\n" not in text
    assert not (made["dir"] / "MARKER").exists()
    if kind in ("other_rank", "lora_none"):
        assert text.endswith("(or evaluate the base model without ckpt_path)." if mode == "eval" else
                             "(or start fresh without ckpt_path).")


IDENTITY = [
    ("other_preset", _identity(preset="v1-3.5b"), (),
     "is a checkpoint of acestep at model.preset=v1-3.5b, this run has model.preset=tiny: add model.preset=v1-3.5b"),
    ("full_finetune", _identity(lora=None), (),
     "is a full fine-tune (lora=none), this run trains a LoRA adapter (lora.r=4): add lora=none"),
    ("other_alpha", lambda c: None, ("lora.alpha=16",), "was trained with lora.alpha=8, this run has lora.alpha=16"),
]


@pytest.mark.parametrize("name,change,extra,says", IDENTITY, ids=[i[0] for i in IDENTITY])
def test_identity_metadata_names_what_the_checkpoint_is_of(made, name, change, extra, says):
    path = _edited(made, f"{name}.ckpt", change)
    with pytest.raises(checkpoint_identity.CheckpointMismatch, match=r"^ckpt_path=") as err:
        resolve_resume(run_cfg(made, f"ckpt_path={path}", *extra))
    assert says in str(err.value), str(err.value)


def test_every_checkpoint_names_its_plugin_preset_and_adapter(made):
    for plugin in ("acestep", "valle"):
        meta = _load(made[plugin])["audiotrain"][checkpoint_identity.KEY]
        assert meta == {"plugin": plugin, "preset": "tiny", "audiotrain_version": "0.1.0",
                        "lora": {"r": 4, "alpha": 8.0, "use_rslora": False, "target_modules": None}}


def _module(cfg):
    from audiotrain.plugins import registry
    from audiotrain.train.model_setup import build_model
    from audiotrain.train.module import TrainModule

    plugin = registry.get("acestep")
    model = build_model(cfg, plugin, report=False)
    return TrainModule(model.backbone, plugin, cfg, [], None, adapter_only=model.adapter_only)


def _bigger_lora_a(ckpt: dict) -> None:
    _no_identity(ckpt)
    ckpt["state_dict"] = {k: torch.zeros(v.shape[0], v.shape[1] + 1) if "lora_A" in k else v
                          for k, v in ckpt["state_dict"].items()}


NO_METADATA = [  # checkpoints written without identity: the weights' names and shapes tell
    ("other_rank", _no_identity, ("lora.r=8",), "was trained with lora.r=4, this run has lora.r=8: add lora.r=4"),
    ("lora_none", _no_identity, ("lora=none",), "holds LoRA adapter weights, this run is a full fine-tune "
                                                "(lora=none)"),
    ("other_model", _bigger_lora_a, (), "does not match this run's model (acestep, preset tiny): 20 shape "
                                        "mismatches (file vs model, e.g."),
]


@pytest.mark.parametrize("name,change,extra,says", NO_METADATA, ids=[i[0] for i in NO_METADATA])
def test_without_metadata_the_weights_shapes_tell(made, name, change, extra, says):
    path = _edited(made, f"nometa_{name}.ckpt", change)
    cfg = run_cfg(made, f"ckpt_path={path}", *extra)
    resolve_resume(cfg)  # nothing in the metadata to go by: the model decides once it exists
    module = _module(cfg)
    module._trainer = SimpleNamespace(ckpt_path=str(path.resolve()))  # as Lightning's restore has it
    with pytest.raises(checkpoint_identity.CheckpointMismatch) as err:
        module.on_load_checkpoint(_load(path))  # what Lightning calls before it loads the weights
    assert str(err.value).startswith(f"ckpt_path={path.resolve()} ") and says in str(err.value), str(err.value)
    assert "\n" not in str(err.value)
    from audiotrain.train.evaluate import load_checkpoint

    with pytest.raises(checkpoint_identity.CheckpointMismatch) as err:
        load_checkpoint(module, path)  # mode=eval's load: the same check
    assert says in str(err.value)


def test_the_same_checkpoint_without_metadata_still_loads(made):
    path = _edited(made, "nometa_same.ckpt", _no_identity)
    cfg = run_cfg(made, f"ckpt_path={path}", mode="eval")
    from audiotrain.train.evaluate import load_checkpoint

    assert resolve_resume(cfg) == path.resolve() and load_checkpoint(_module(cfg), path) == 2


def test_trust_pickle_opens_a_checkpoint_holding_a_python_object(made):
    path = _edited(made, "namespace.ckpt", lambda c: c.update(hyper_parameters=argparse.Namespace(lr=1e-4)))
    with pytest.raises(UnsafeFileError, match="argparse.Namespace.*add trust_pickle=true"):
        resolve_resume(run_cfg(made, f"ckpt_path={path}"))
    assert resolve_resume(run_cfg(made, f"ckpt_path={path}", "trust_pickle=true")) == path.resolve()
    loaded = DirectCheckpointIO(trust_pickle=True).load_checkpoint(path)  # what Lightning's restore reads
    assert loaded["hyper_parameters"].lr == 1e-4 and loaded["global_step"] == 2
    with pytest.raises(UnsafeFileError, match="argparse.Namespace"):
        DirectCheckpointIO().load_checkpoint(path)


# ---- resume=auto -------------------------------------------------------------------------------------------
def _place(made, exp: str, run: str, src: Path | bytes, age: int) -> Path:
    """``src`` as ``<log_dir>/<exp>/<run>/checkpoints/last.ckpt``, ``age`` seconds old."""
    d = made["dir"] / "runs" / exp / run / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    out = d / "last.ckpt"
    out.write_bytes(src if isinstance(src, bytes) else src.read_bytes())
    t = out.stat().st_mtime - age
    os.utime(out, (t, t))
    return out


def test_resume_auto_skips_a_truncated_or_empty_newest_checkpoint(made, capsys):
    good = _place(made, "skip", "a", made["acestep"], age=300)
    cut = _place(made, "skip", "b", made["acestep"].read_bytes()[:1000], age=200)
    empty = _place(made, "skip", "c", b"", age=100)
    assert resolve_resume(run_cfg(made, "resume=auto", exp="skip")) == good.resolve()
    err = capsys.readouterr().err
    assert err.count("resume=auto: not resuming") == 2
    assert (f"resume=auto: not resuming {empty}, which is empty (0 bytes, an interrupted copy?); taking the "
            f"checkpoint before it.") in err
    assert (f"resume=auto: not resuming {cut}, which is truncated (an interrupted download or copy?) and cannot be "
            f"read; taking the checkpoint before it.") in err


def test_resume_auto_with_only_broken_checkpoints_is_one_sentence(made):
    newest = _place(made, "broken", "a", b"", age=10)
    with pytest.raises(UserError) as err:
        resolve_resume(run_cfg(made, "resume=auto", exp="broken"))
    assert str(err.value) == (f"resume=auto: none of the 1 checkpoints found is complete (newest: {newest}; empty "
                              "or truncated copies): pass ckpt_path= a complete one, or remove them to start fresh.")


@pytest.mark.parametrize("kind", ["malicious", "other_plugin", "text"])
def test_resume_auto_refuses_a_wrong_newest_checkpoint_instead_of_skipping_it(made, kind):
    _place(made, f"wrong_{kind}", "a", made["acestep"], age=300)
    bad = _place(made, f"wrong_{kind}", "b", wrong_file(made, kind), age=10)
    with pytest.raises(UserError) as err:
        resolve_resume(run_cfg(made, "resume=auto", exp=f"wrong_{kind}"))
    assert str(err.value).startswith(f"{bad} (the newest checkpoint of exp_name=wrong_{kind}, found by resume=auto) ")
    assert not (made["dir"] / "MARKER").exists()


def test_a_sweep_job_skips_its_own_truncated_checkpoint(made, capsys):
    from audiotrain.train.sweep_job import SweepJob

    cfg = run_cfg(made, exp="sweep")
    own = Path(str(cfg.paths.run_dir)) / "checkpoints"
    own.mkdir(parents=True)
    (own / "manual-step=1.ckpt").write_bytes(made["acestep"].read_bytes())
    os.utime(own / "manual-step=1.ckpt", (1, 1))
    (own / "last.ckpt").write_bytes(made["acestep"].read_bytes()[:5000])
    job = SweepJob.__new__(SweepJob)
    job.num = 3
    assert resolve_resume(cfg, job) == (own / "manual-step=1.ckpt").resolve()
    assert "sweep job 3: not resuming" in capsys.readouterr().err


# ---- through the CLI: one red line, exit 2, the marker never made ----------------------------------------------
def _cli(made, tmp_path, *argv: str, tracking: bool = True) -> subprocess.CompletedProcess:
    """``audiotrain`` as a user runs it (a tiny ACE-Step LoRA r=4 run plus ``argv``); ``tracking=False`` leaves the
    tracking group to ``argv``."""
    own = [a for a in TINY if a != NO_SIGNAL_HANDLERS and (tracking or not a.startswith("tracking="))]
    return subprocess.run([sys.executable, "-m", "audiotrain.cli.main", *ACESTEP, f"data={made['songs']}", *own,
                           *argv], cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600)


def _one_line(out: subprocess.CompletedProcess, says: str) -> str:
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    lines = [ln for ln in text.splitlines() if ln.startswith("audiotrain: ")]
    assert len(lines) == 1 and says in lines[0], text[-3000:]
    return lines[0]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cli_refuses_a_malicious_ckpt_path(made, tmp_path, mode):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Evil(marker)}, evil)
    line = _one_line(_cli(made, tmp_path, f"mode={mode}", f"ckpt_path={evil}"), "holds pickled Python code")
    assert f"ckpt_path={evil}" in line and line.endswith("add trust_pickle=true.")
    assert not marker.exists()


def test_cli_resume_auto_refuses_a_malicious_newest_checkpoint(made, tmp_path):
    marker = tmp_path / "MARKER"
    d = tmp_path / "exps" / "logs" / "evil_exp" / "run1" / "checkpoints"
    d.mkdir(parents=True)
    torch.save({"state_dict": {}, "x": Evil(marker)}, d / "last.ckpt")
    line = _one_line(_cli(made, tmp_path, "resume=auto", "exp_name=evil_exp", f"paths.log_dir={tmp_path / 'exps' / 'logs'}"),
                     "found by resume=auto) holds pickled Python code (posix.system)")
    assert "trust_pickle=true" in line and not marker.exists()


def test_cli_truncated_ckpt_path_is_one_line(made, tmp_path):
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(made["acestep"].read_bytes()[:4096])
    _one_line(_cli(made, tmp_path, f"ckpt_path={cut}"), f"ckpt_path={cut} is truncated")


@pytest.mark.slow  # builds the whole run before fit refuses the file: ~40 s on 2 busy cores
def test_cli_mismatch_found_inside_fit_is_one_line_and_the_mlflow_run_failed(made, tmp_path):
    """A checkpoint without metadata at another LoRA rank passes the early check; Lightning's restore
    (on_load_checkpoint, inside trainer.fit) refuses it: one line, exit 2, and the MLflow run ends FAILED."""
    ckpt = _load(made["acestep"])
    _no_identity(ckpt)
    path = tmp_path / "earlier" / "checkpoints" / "last.ckpt"  # resumed in its run directory, earlier/
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    out = _cli(made, tmp_path, f"ckpt_path={path}", "lora.r=8", "tracking=mlflow",
               f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", tracking=False)
    _one_line(out, f"ckpt_path={path} was trained with lora.r=4, this run has lora.r=8: add lora.r=4")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert [r.info.status for r in runs] == ["FAILED"]


# ---- backend=deepspeed: DeepSpeed opens its folder with weights_only=False, so it is checked first ----------------
def test_a_deepspeed_checkpoint_folder_is_read_as_data_before_deepspeed_opens_it(made, tmp_path):
    import shutil

    from audiotrain.train.deepspeed_cpu import free_port
    from tests.core.test_deepspeed_cpu import _fit

    saved = dict(os.environ)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    try:
        _, _, folder = _fit(tmp_path, 2)  # a real ZeRO-2 checkpoint folder (its optimizer file needs the allow-list)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert resolve_resume(run_cfg(made, f"ckpt_path={folder}")) == folder.resolve()
    evil = tmp_path / "evil.ckpt"
    shutil.copytree(folder, evil)
    optim = next((evil / "checkpoint").glob("*optim_states.pt"))
    torch.save({"x": Evil(tmp_path / "MARKER")}, optim)
    with pytest.raises(UnsafeFileError) as err:
        resolve_resume(run_cfg(made, f"ckpt_path={evil}"))
    assert str(err.value).startswith(f"ckpt_path={evil}: {optim} holds pickled Python code (posix.system)")
    assert not (tmp_path / "MARKER").exists()
    for f in (evil / "checkpoint").iterdir():
        f.unlink()
    with pytest.raises(UserError, match=r"is a DeepSpeed checkpoint folder whose latest tag \(checkpoint\) holds no "
                                        r"model states file \(an incomplete copy\?\)"):
        resolve_resume(run_cfg(made, f"ckpt_path={evil}"))
