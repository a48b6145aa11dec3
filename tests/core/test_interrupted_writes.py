"""Interrupted writes lose nothing (issue 13, point 4).

Each writer runs in a child process whose underlying write stops halfway and SIGKILLs it (``interrupt_kit``);
then the previous complete file or folder is still there byte for byte, the reader a later run uses (find the
latest checkpoint, load an adapter, read the cache) returns it and never the half-written one, and the next
writer to the same place removes what the killed one left. A full disk (ENOSPC) during a save is one sentence
naming the file and what is kept, and the previous file survives.
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
import torch

from audiotrain import atomic_write as aw
from audiotrain.atomic_write import DiskFullError, is_temporary
from audiotrain.safe_files import load_torch
from audiotrain.train.checkpoint_io import DirectCheckpointIO
from audiotrain.train.run_dir import find_latest_checkpoint, saved_adapters
from tests.core.interrupt_kit import run_killed, toy_writer, tree

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def later_run() -> None:
    """What a later run is: a new process, which has swept no folder yet (a writer sweeps each folder once)."""
    aw._swept.clear()


def _ckpt(step: int) -> dict:
    return {"global_step": step, "state_dict": {"w": torch.full((4096,), float(step))}}


def _load(path: Path) -> dict:
    return load_torch(path, expected="a checkpoint")


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---- checkpoints ------------------------------------------------------------------------------------------------

def test_a_checkpoint_killed_mid_write_leaves_the_previous_one(tmp_path):
    ckpts = tmp_path / "logs" / "exp" / "run" / "checkpoints"
    last = ckpts / "last.ckpt"
    DirectCheckpointIO().save_checkpoint(_ckpt(4), last)
    before = last.read_bytes()
    run_killed(f"""
        from tests.core.interrupt_kit import kill_in_torch_save
        from tests.core.test_interrupted_writes import _ckpt
        from audiotrain.train.checkpoint_io import DirectCheckpointIO
        kill_in_torch_save()
        DirectCheckpointIO().save_checkpoint(_ckpt(8), {str(last)!r})
    """, tmp_path)
    assert last.read_bytes() == before
    (half,) = [p for p in ckpts.iterdir() if p.name != "last.ckpt"]  # what the killed save wrote, unpublished
    assert is_temporary(half.name) and half.name.startswith(".last.ckpt.tmp-") and 0 < half.stat().st_size
    found = find_latest_checkpoint(tmp_path / "logs", "exp")  # resume=auto's lookup
    assert found == last and _load(found)["global_step"] == 4
    assert _names(ckpts) == ["last.ckpt"]  # the lookup swept the dead process's temporary file
    DirectCheckpointIO().save_checkpoint(_ckpt(12), last)
    assert _load(last)["global_step"] == 12 and _names(ckpts) == ["last.ckpt"]


# kill points of Lightning's ModelCheckpoint (keep_last_n=1, save_last) at step 3: writing step=3.ckpt; after it,
# before step=2.ckpt is pruned; writing last.ckpt. Expected: the complete files left, by global step; resume=auto
# takes the newest of them (step=3.ckpt once it is complete, even before last.ckpt is).
KILL_POINTS = {
    "writing step=3.ckpt": ("lambda name: '.step=3.ckpt.tmp-' in name", None, {"last.ckpt": 2, "step=2.ckpt": 2}),
    "between writing and pruning": (None, "step=2.ckpt", {"last.ckpt": 2, "step=2.ckpt": 2, "step=3.ckpt": 3}),
    "writing last.ckpt": ("lambda name: '.last.ckpt.tmp-' in name and torch_saves[0] == 5", None,
                          {"last.ckpt": 2, "step=3.ckpt": 3}),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_kill_at_any_point_of_a_checkpoint_step_leaves_complete_checkpoints(tmp_path, point):
    when, prune, expected = KILL_POINTS[point]
    ckpts = tmp_path / "exp" / "run" / "checkpoints"
    run_killed(f"""
        import torch, lightning as L
        from lightning.pytorch.plugins.io import TorchCheckpointIO
        from tests.core.interrupt_kit import die, kill_in_torch_save
        from audiotrain.train.callbacks import StepCheckpoint
        from audiotrain.train.checkpoint_io import DirectCheckpointIO
        torch_saves = [0]
        real_save = torch.save
        def counting(obj, f, *a, **k):
            torch_saves[0] += 1
            return real_save(obj, f, *a, **k)
        torch.save = counting
        if {when!r} is not None:
            kill_in_torch_save(eval({when!r}))
        real_remove = TorchCheckpointIO.remove_checkpoint
        def remove(self, path):
            if {prune!r} is not None and str(path).endswith({prune!r}):
                die()
            return real_remove(self, path)
        TorchCheckpointIO.remove_checkpoint = remove

        class Tiny(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = torch.nn.Linear(4, 1)
            def training_step(self, batch, batch_idx):
                return self.net(batch[0]).pow(2).mean()
            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        data = torch.utils.data.TensorDataset(torch.randn(16, 4))
        cb = StepCheckpoint(dirpath={str(ckpts)!r}, filename="step={{step}}", auto_insert_metric_name=False,
                            every_n_train_steps=1, save_top_k=1, monitor="step", mode="max", save_last=True)
        trainer = L.Trainer(accelerator="cpu", max_steps=5, callbacks=[cb], plugins=[DirectCheckpointIO()],
                            logger=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir={str(tmp_path)!r})
        trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=2))
    """, tmp_path)
    complete = {p.name: _load(p)["global_step"] for p in ckpts.glob("*.ckpt")}
    assert complete == expected
    assert all(is_temporary(n) for n in _names(ckpts) if n not in expected)
    latest = find_latest_checkpoint(tmp_path, "exp")  # resume=auto continues the newest complete one
    newest = max(expected.values())
    assert _load(latest)["global_step"] == newest
    assert latest == (ckpts / "last.ckpt" if expected["last.ckpt"] == newest else ckpts / f"step={newest}.ckpt")
    assert _names(ckpts) == sorted(expected)  # leftovers of the killed process swept


def test_a_full_disk_during_a_checkpoint_save_is_one_sentence_and_keeps_the_previous(tmp_path, monkeypatch):
    ckpts = tmp_path / "checkpoints"
    io = DirectCheckpointIO()
    io.save_checkpoint(_ckpt(3), ckpts / "last.ckpt")
    io.save_checkpoint(_ckpt(3), ckpts / "step=3.ckpt")
    os.utime(ckpts / "step=3.ckpt", (1e9, 1e9))  # older than last.ckpt
    before = (ckpts / "last.ckpt").read_bytes()
    real = torch.save

    def full(obj, f, *a, **k):  # the disk fills up halfway through the file
        f.write(b"\0" * 1000)
        raise ENOSPC

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError) as new_file:
        io.save_checkpoint(_ckpt(6), ckpts / "step=6.ckpt")
    with pytest.raises(DiskFullError) as replaced:
        io.save_checkpoint(_ckpt(6), ckpts / "last.ckpt")
    monkeypatch.setattr(torch, "save", real)
    msg = str(new_file.value)
    assert msg.startswith(f"Could not write {ckpts / 'step=6.ckpt'}: the disk is full (")
    assert re.search(r"full \(\d+(\.\d)? (bytes|KB|MB|GB|TB) free of \d+(\.\d)? (bytes|KB|MB|GB|TB)\);", msg)
    assert f"; the previous checkpoint {ckpts / 'last.ckpt'} is kept; free some space, or set paths.log_dir= " in msg
    assert msg.endswith("then resume with resume=auto.")
    assert "trainer.keep_last_n=" in msg and msg.count(". ") == 0 and "\n" not in msg  # one sentence
    assert f"the previous checkpoint {ckpts / 'last.ckpt'} is kept" in str(replaced.value)
    assert (ckpts / "last.ckpt").read_bytes() == before and _names(ckpts) == ["last.ckpt", "step=3.ckpt"]
    assert isinstance(new_file.value.__cause__, OSError) and new_file.value.__cause__.errno == errno.ENOSPC


@pytest.mark.parametrize("text", ["safetensors_rust.SafetensorError: Error while serializing: IoError(Os { code: 28, "
                                  "kind: StorageFull, message: \"No space left on device\" })",
                                  "Disk quota exceeded (os error 122)"])
def test_a_full_disk_is_recognised_in_the_texts_of_library_writers(text):
    assert aw.is_disk_full(RuntimeError(text))
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert aw.is_disk_full(wrapped) and not aw.is_disk_full(RuntimeError("file write failed: bad descriptor"))


def test_a_deepspeed_checkpoint_folder_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    from tests.core.test_deepspeed_cpu import _fit, free_port

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    trainer, _, ckpt = _fit(tmp_path, 2)  # final.ckpt: a folder, written through our strategy's save_checkpoint
    before = tree(ckpt)
    assert "latest" in before and _names(tmp_path) == ["final.ckpt"]
    engine = trainer.strategy.deepspeed_engine
    real = engine.save_checkpoint

    def full_halfway(save_dir, *args, **kwargs):  # every part written, then the model states cut short
        real(save_dir, *args, **kwargs)
        (states,) = Path(save_dir).rglob("*model_states.pt")
        states.write_bytes(states.read_bytes()[:100])
        raise ENOSPC

    monkeypatch.setattr(engine, "save_checkpoint", full_halfway)
    with pytest.raises(DiskFullError) as failed:
        trainer.save_checkpoint(str(ckpt))
    assert str(failed.value).startswith(f"Could not write {ckpt}: the disk is full (")
    assert f"the previous checkpoint {ckpt} is kept" in str(failed.value)
    assert tree(ckpt) == before and _names(tmp_path) == ["final.ckpt"]
    monkeypatch.setattr(engine, "save_checkpoint", real)
    trainer.save_checkpoint(str(ckpt))
    assert sorted(tree(ckpt)) == sorted(before) and _names(tmp_path) == ["final.ckpt"]


# ---- adapters ---------------------------------------------------------------------------------------------------

def _toy_adapters(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    toy_writer(1.0)(run / "adapters" / "step_2")
    toy_writer(2.0)(run / "adapters" / "final")
    return run


def _lora_value(adapter: Path) -> float:
    from audiotrain.lora.adapter import load_peft
    from tests.core.interrupt_kit import toy_format

    settings, state = load_peft(adapter / "peft")
    native_settings, native = toy_format().load(adapter / "toy")
    values = {float(v.flatten()[0]) for v in [*state.values(), *native.values()]}
    assert settings.r == native_settings.r == 2 and len(values) == 1, values
    return values.pop()


def test_an_adapter_folder_killed_mid_save_is_the_previous_one_or_absent(tmp_path):
    run = _toy_adapters(tmp_path)
    final = run / "adapters" / "final"
    before = tree(final)
    # a new folder killed in its first weights file (PEFT's); an existing one replaced, killed in its second file
    # (the native one, after PEFT's was written complete)
    run_killed(f"""
        from pathlib import Path
        from tests.core.interrupt_kit import kill_in_save_file, toy_writer
        kill_in_save_file(when=lambda f: f.endswith("adapter_model.safetensors"))
        save = toy_writer(3.0)
        save(Path({str(run / 'adapters' / 'step_4')!r}))
    """, tmp_path)
    adapters = run / "adapters"
    assert not (adapters / "step_4").exists()
    assert [n.split(".tmp-")[0] for n in _names(adapters) if is_temporary(n)] == [".step_4"]
    run_killed(f"""
        from pathlib import Path
        from tests.core.interrupt_kit import kill_in_save_file, toy_writer
        kill_in_save_file(when=lambda f: f.endswith("lora.safetensors"))
        toy_writer(3.0)(Path({str(final)!r}))
    """, tmp_path)
    assert tree(final) == before and _lora_value(final) == 2.0
    # the second writer swept the first one's folder; its own is left, which the lister skips (and sweeps)
    (left,) = [adapters / n for n in _names(adapters) if is_temporary(n)]
    assert left.name.startswith(".final.tmp-")  # killed halfway: PEFT's file complete, the native one cut short
    size = {f: (final / f).stat().st_size for f in ("peft/adapter_model.safetensors", "toy/lora.safetensors")}
    assert (left / "peft/adapter_model.safetensors").stat().st_size == size["peft/adapter_model.safetensors"]
    assert 0 < (left / "toy/lora.safetensors").stat().st_size < size["toy/lora.safetensors"]
    assert [d.name for d in saved_adapters(run)] == ["step_2", "final"]
    assert _names(adapters) == ["final", "step_2"]
    toy_writer(5.0)(final)
    assert _lora_value(final) == 5.0 and _names(adapters) == ["final", "step_2"]


def test_a_kill_between_the_two_renames_of_a_replace_keeps_the_old_folder(tmp_path):
    """Where the filesystem cannot exchange two folders atomically, the old one is renamed aside, the new one in:
    killed in between, the old folder comes back for the next reader."""
    run = _toy_adapters(tmp_path)
    final = run / "adapters" / "final"
    before = tree(final)
    run_killed(f"""
        import os
        from pathlib import Path
        from audiotrain import atomic_write
        from tests.core.interrupt_kit import die, toy_writer
        atomic_write.exchange = lambda a, b: False
        real_rename = os.rename
        def rename(src, dst):
            if str(dst) == {str(final)!r}:
                die()                                        # the old folder is aside, the new one not in yet
            return real_rename(src, dst)
        os.rename = rename
        toy_writer(3.0)(Path({str(final)!r}))
    """, tmp_path)
    adapters = run / "adapters"
    assert not final.exists()
    assert sorted(n.split(".")[2].split("-")[0] for n in _names(adapters) if is_temporary(n)) == ["old", "tmp"]
    from audiotrain.cli.adapters import _adapter_dir  # what export / merge read

    assert _adapter_dir(run, "final") == final and tree(final) == before and _lora_value(final) == 2.0
    assert [d.name for d in saved_adapters(run)] == ["step_2", "final"] and _names(adapters) == ["final", "step_2"]


def test_replacing_a_folder_is_one_atomic_exchange_on_linux(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    if not aw.exchange(a, b):
        pytest.skip("this filesystem has no renameat2(RENAME_EXCHANGE): the aside-and-rename path is used")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def test_a_full_disk_during_an_adapter_save_keeps_the_previous_adapter(tmp_path, monkeypatch):
    import safetensors.torch as st

    run = _toy_adapters(tmp_path)
    final = run / "adapters" / "final"
    before = tree(final)

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 100)
        raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                           'left on device" })')

    monkeypatch.setattr(st, "save_file", full)
    with pytest.raises(DiskFullError) as replaced:
        toy_writer(3.0)(final)
    with pytest.raises(DiskFullError) as new:
        toy_writer(3.0)(run / "adapters" / "step_4")
    assert str(replaced.value).startswith(f"Could not write {final}: the disk is full (")
    assert f"; the previous adapter {final} is kept; free some space, or set paths.log_dir= " in str(replaced.value)
    assert f"; the previous adapter {final} is kept;" in str(new.value)  # the newest one there
    assert tree(final) == before and _names(run / "adapters") == ["final", "step_2"]


# ---- the feature cache and text files ----------------------------------------------------------------------------

def test_a_cache_entry_killed_mid_write_is_a_miss_and_the_others_stay(tmp_path):
    from audiotrain.data.cache import FeatureCache

    cache = FeatureCache(tmp_path / "cache", "ns")
    cache.save("enc", "k1", "old", {"z": torch.ones(64)})
    before = cache.path("enc", "k1", "old").read_bytes()
    for entry in ("old", "new"):  # a rewrite of a complete entry, and a new one
        run_killed(f"""
            import torch
            from audiotrain.data import cache as cache_module
            from tests.core.interrupt_kit import kill_in_save_file
            kill_in_save_file(cache_module)
            cache_module.FeatureCache({str(tmp_path / 'cache')!r}, "ns").save("enc", "k1", {entry!r},
                                                                          {{"z": torch.zeros(64)}})
        """, tmp_path)
    folder = cache.dir_for("enc", "k1")
    assert not cache.has("enc", "k1", "new") and cache.has("enc", "k1", "old")
    assert cache.path("enc", "k1", "old").read_bytes() == before and torch.equal(cache.load("enc", "k1", "old")["z"],
                                                                                  torch.ones(64))
    # the second killed writer swept the first one's file; its own is left under a temporary name
    assert [n.split(".tmp-")[0] for n in _names(folder) if is_temporary(n)] == [".new.safetensors"]
    later_run()
    cache.save("enc", "k1", "new", {"z": torch.zeros(64)})  # the next writer there sweeps the dead ones' files
    assert _names(folder) == ["new.safetensors", "old.safetensors"]


def test_a_full_disk_while_caching_names_the_entry_and_the_cache_setting(tmp_path, monkeypatch):
    from audiotrain.data import cache as cache_module

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 10)
        raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                           'left on device" })')

    monkeypatch.setattr(cache_module, "save_file", full)
    cache = cache_module.FeatureCache(tmp_path / "cache", "ns")
    with pytest.raises(DiskFullError) as failed:
        cache.save("enc", "k1", "x", {"z": torch.ones(3)})
    msg = str(failed.value)
    assert msg.startswith(f"Could not write {cache.path('enc', 'k1', 'x')}: the disk is full (")
    assert msg.endswith("; the entries cached before it are kept; free some space, or set cache_dir= (or "
                        "AUDIOTRAIN_CACHE) to a disk with room.")
    assert not cache.has("enc", "k1", "x") and _names(cache.dir_for("enc", "k1")) == []


@pytest.mark.parametrize("writer", ["summary", "bad-input report", "run id"])
def test_run_files_killed_mid_write_keep_their_previous_text(tmp_path, writer):
    from audiotrain.data.report import BadInputReport
    from audiotrain.train import run_dir as rd

    calls = {"summary": ("rd.summary_file(run, {'steps': N})", "summary.json"),
             "bad-input report": ("r = BadInputReport(source='x'); r.usable = N; r.save(run)", "bad_inputs.txt"),
             "run id": ("rd.write_run_id(run, 'id-' + str(N))", "mlflow_run_id")}
    code, name = calls[writer]
    run = tmp_path / "run"
    exec(code, {"rd": rd, "BadInputReport": BadInputReport, "run": run, "N": 1})
    before = (run / name).read_text()
    run_killed(f"""
        from pathlib import Path
        from audiotrain import atomic_write
        from audiotrain.data.report import BadInputReport
        from audiotrain.train import run_dir as rd
        from tests.core.interrupt_kit import kill_in_text_write
        kill_in_text_write(atomic_write)
        run, N = Path({str(run)!r}), 22222
        {code}
    """, tmp_path)
    assert (run / name).read_text() == before and "22222" not in before
    assert any(is_temporary(n) for n in _names(run))


# ---- a training run --------------------------------------------------------------------------------------------

@pytest.mark.slow  # ~35 s of CPU: one whole CLI training run
def test_a_full_disk_during_training_stops_the_run_in_one_sentence_exit_2_and_mlflow_failed(tmp_path, song_dir):
    """`audiotrain ...` whose second checkpoint save (step 4) meets a full disk halfway through the file."""
    import subprocess
    import sys

    from tests.core.conftest import cli_env
    from tests.core.interrupt_kit import REPO

    logs = tmp_path / "logs"
    overrides = ["model=acestep", f"data={song_dir}", "debug=smoke", "trainer.max_steps=6",
                 "trainer.every_n_train_steps=2", "trainer.every_plot_step=0", "trainer.progress_bar=false",
                 "trainer.stdin_control=false", "trainer.eval_audio=false", f"paths.log_dir={logs}", "exp_name=full"]
    code = f"""
import errno, os, sys, torch
real = torch.save
def save(obj, f, *a, **k):
    if ".step=4.ckpt.tmp-" in str(getattr(f, "name", f)):
        f.write(b"\\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(obj, f, *a, **k)
torch.save = save
from audiotrain.cli.main import main
sys.exit(main({overrides!r}))
"""
    env = dict(cli_env(tmp_path), PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 2, p.stderr[-4000:] + p.stdout[-2000:]
    out = p.stdout + p.stderr
    assert "Traceback" not in out
    (line,) = [ln for ln in out.splitlines() if "the disk is full" in ln]
    (run,) = [d for d in (logs / "full").iterdir() if d.is_dir()]
    ckpts = run / "checkpoints"
    assert line.startswith(f"audiotrain: Could not write {ckpts / 'step=4.ckpt'}: the disk is full (")
    assert f"; the previous checkpoint {ckpts / 'last.ckpt'} is kept; free some space" in line
    assert _names(ckpts) == ["last.ckpt", "step=2.ckpt"]  # no half file, under any name
    assert _load(ckpts / "last.ckpt")["global_step"] == 2 and _load(ckpts / "step=2.ckpt")["global_step"] == 2
    assert find_latest_checkpoint(logs, "full") == ckpts / "last.ckpt"
    assert not (run / "adapters" / "final").exists() and (run / "adapters" / "step_2" / "peft").is_dir()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("audiotrain/acestep").experiment_id])
    assert mlrun.info.status == "FAILED"
