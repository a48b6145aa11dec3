"""backend=deepspeed on a CPU (gloo), its config, the fp16 loss-scale guard and the refused combinations."""
from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from audiotrain.train.deepspeed_cpu import CPUDeepSpeedStrategy, build, current_loss_scale, ds_config, free_port
from audiotrain.train.loss_scale import LossScaleGuard, read_loss_scale

BACKEND = dict(name="deepspeed", stage=2, offload_optimizer=False, offload_parameters=False, loss_scale_window=1000,
               min_loss_scale=32768, max_loss_scale=1048576, initial_scale_power=16)


@pytest.fixture
def rendezvous():
    """A distinct free port per test and the environment restored after. The one-process gloo group of the
    first run is kept (as in one process running several jobs): DeepSpeed caches its groups, so a destroyed
    and re-created default group would leave it holding stale ones."""
    saved = dict(os.environ)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(free_port())
    yield
    os.environ.clear()
    os.environ.update(saved)


def _fit(tmp_path: Path, stage: int, precision: str = "32-true", persistence: int | None = None, **backend):
    import lightning as L
    from omegaconf import OmegaConf

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(8, 1)
            self.losses: list[float] = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x).float(), y.float())
            self.losses.append(float(loss.detach()))
            return loss

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-2)  # a client optimizer: no DeepSpeed op to compile

    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(40, 8, generator=g), torch.randn(40, 1, generator=g))
    strategy = build(OmegaConf.create({**BACKEND, "stage": stage, **backend}), precision, "cpu", batch_size=4)
    assert isinstance(strategy, CPUDeepSpeedStrategy)
    if persistence is not None:  # partition even tiny parameters (ZeRO-3 keeps ones below 1e5 elements whole)
        strategy.config["zero_optimization"]["stage3_param_persistence_threshold"] = persistence
    trainer = L.Trainer(accelerator="cpu", devices=1, strategy=strategy, precision=precision, max_steps=5,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path))
    module = Tiny()
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    ckpt = tmp_path / "final.ckpt"
    trainer.save_checkpoint(str(ckpt))
    return trainer, module, ckpt


@pytest.mark.parametrize("stage", [0, 2, 3])  # ~2 s each on a 2-core CPU: all in the fast suite
def test_zero_stage_trains_and_checkpoints_on_cpu(tmp_path, rendezvous, stage):
    trainer, module, ckpt = _fit(tmp_path, stage)
    assert trainer.global_step == 5
    assert len(module.losses) == 5 and all(math.isfinite(v) for v in module.losses)
    assert trainer.strategy.root_device == torch.device("cpu", 0)
    assert trainer.strategy.deepspeed_engine.zero_optimization_stage() == stage
    assert ckpt.is_dir() and (ckpt / "latest").is_file()  # DeepSpeed writes a checkpoint folder
    assert list((ckpt / "checkpoint").glob("*model_states.pt"))


def test_bf16_and_optimizer_offload_on_cpu(tmp_path, rendezvous):
    trainer, module, ckpt = _fit(tmp_path, 2, precision="bf16-mixed", offload_optimizer=True)
    assert trainer.strategy.deepspeed_engine.bfloat16_enabled()
    assert all(math.isfinite(v) for v in module.losses) and (ckpt / "latest").is_file()
    assert read_loss_scale(trainer) is None  # bf16 does not scale losses: the guard stays quiet


def test_zero3_weights_are_gathered_for_saving(tmp_path, rendezvous):
    from audiotrain.train.deepspeed_cpu import gathered

    _, module, _ = _fit(tmp_path, 3, persistence=0)
    assert module.net.weight.numel() == 0  # partitioned: what a plain state_dict() would save
    with gathered(module):
        assert tuple(module.net.weight.shape) == (1, 8) and torch.isfinite(module.net.weight).all()
    with gathered(torch.nn.Linear(2, 2)):  # not partitioned: nothing to gather
        pass


def test_ds_config_from_the_backend_yaml():
    from tests.conftest import compose

    cfg = compose(["model=acestep", "backend=deepspeed"])
    assert cfg.backend.stage == 2 and cfg.backend.min_loss_scale == 32768 and cfg.backend.max_loss_scale == 1048576
    fp16 = ds_config(cfg.backend, "16-mixed")
    assert fp16["fp16"] == {"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000,
                            "hysteresis": 2, "min_loss_scale": 32768.0}
    assert "bf16" not in fp16 and fp16["zero_optimization"]["stage"] == 2
    bf16 = ds_config(cfg.backend, "bf16-mixed")
    assert bf16["bf16"] == {"enabled": True} and "fp16" not in bf16
    fp32 = ds_config(cfg.backend, "32-true", batch_size=3)
    assert "fp16" not in fp32 and "bf16" not in fp32 and fp32["train_micro_batch_size_per_gpu"] == 3
    off = ds_config({**BACKEND, "stage": 3, "offload_optimizer": True, "offload_parameters": True}, "32-true")
    assert off["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert off["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert off["zero_force_ds_cpu_optimizer"] is False  # the torch optimizer steps offloaded states


def test_deepspeed_engine_scale_is_read_and_capped():
    from audiotrain.train.deepspeed_cpu import cap_loss_scale

    engine = SimpleNamespace(optimizer=SimpleNamespace(cur_scale=4.0 * 1048576), fp16_enabled=lambda: True)
    assert current_loss_scale(engine) == 4.0 * 1048576
    cap_loss_scale(engine, 1048576)
    assert current_loss_scale(engine) == 1048576
    assert current_loss_scale(SimpleNamespace(optimizer=SimpleNamespace(cur_scale=1.0), fp16_enabled=lambda: False)) is None


# ---- the fp16 loss-scale guard, driven through a fake trainer ----------------------------------------------

class FakeScaler:
    def __init__(self, scale: float):
        self.scale = scale

    def get_scale(self) -> float:
        return self.scale

    def is_enabled(self) -> bool:
        return True


class FakeTrainer:
    def __init__(self, root: Path, strategy):
        self.global_step = 0
        self.strategy = strategy
        self.default_root_dir = str(root)
        self.callback_metrics: dict = {}
        self.should_stop = False
        self.is_global_zero = True
        self.saved: list[str] = []

    def save_checkpoint(self, path: str) -> None:
        self.saved.append(path)
        Path(path).write_text("ckpt")


def _drive(guard, trainer, set_scale, scales):
    guard.on_train_start(trainer, None)
    for s in scales:
        set_scale(s)
        trainer.global_step += 1
        guard.on_train_batch_end(trainer, None, None, None, trainer.global_step - 1)
        if trainer.should_stop:
            break


def test_guard_warns_then_checkpoints_and_stops_with_a_grad_scaler(tmp_path):
    scaler = FakeScaler(65536.0)
    trainer = FakeTrainer(tmp_path, SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler)))
    logged = []
    tracker = SimpleNamespace(log_metrics=lambda m, step: logged.append((step, m["train/loss_scale"])))
    guard = LossScaleGuard(floor=16384, patience=3, tracker=tracker, notify=lambda m: None)
    # above, dips (recovers: the count restarts), then stays below for 3 optimizer steps
    _drive(guard, trainer, lambda s: setattr(scaler, "scale", s), [65536, 8192, 32768, 8192, 4096, 2048, 1024])
    assert len([m for m in guard.messages if "fell to" in m]) == 1  # warned once, at the first dip
    assert "fell to 8192 at step 2" in guard.messages[0]
    assert trainer.should_stop and guard.stopped_at == 6
    path = tmp_path / "checkpoints" / "loss-scale-step=6.ckpt"
    assert trainer.saved == [str(path)] and guard.checkpoint_path == path and path.is_file()
    assert guard.messages[-1].startswith("Stopped at step 6: the fp16 loss scale stayed below 16384 for 3")
    assert logged[:2] == [(1, 65536.0), (2, 8192.0)]
    assert float(trainer.callback_metrics["train/loss_scale"]) == 2048.0


def test_guard_reads_deepspeed_scale_and_skips_accumulation(tmp_path):
    engine = SimpleNamespace(optimizer=SimpleNamespace(cur_scale=65536.0), fp16_enabled=lambda: True)
    trainer = FakeTrainer(tmp_path, SimpleNamespace(deepspeed_engine=engine, precision_plugin=None))
    guard = LossScaleGuard(floor=16384, patience=2, checkpoint_dir=tmp_path / "ck")
    guard.on_train_start(trainer, None)
    engine.optimizer.cur_scale = 1024.0
    guard.on_train_batch_end(trainer, None, None, None, 0)  # same global_step: still accumulating, not read
    assert guard.history == [] and guard.below == 0
    with pytest.warns(RuntimeWarning) as caught:
        _drive(guard, trainer, lambda s: setattr(engine.optimizer, "cur_scale", s), [1024, 512])
    said = [str(w.message) for w in caught]
    assert said[0].startswith("The fp16 loss scale fell to 1024 at step 1") and said[1].startswith("Stopped at step 2")
    assert trainer.should_stop and trainer.saved == [str(tmp_path / "ck" / "loss-scale-step=2.ckpt")]


def test_guard_is_quiet_without_loss_scaling(tmp_path):
    trainer = FakeTrainer(tmp_path, SimpleNamespace(precision_plugin=SimpleNamespace(scaler=None)))
    guard = LossScaleGuard(floor=16384, patience=1)
    _drive(guard, trainer, lambda s: None, [1, 1, 1])
    assert not trainer.should_stop and guard.history == [] and not trainer.saved


# ---- refused combinations ----------------------------------------------------------------------------------

def _problems(song_dir, *extra: str) -> list[str]:
    from audiotrain.config.compose import check_job
    from audiotrain.config.validate import ConfigError
    from audiotrain.plugins import registry
    from tests.conftest import compose

    overrides = ["model=acestep", "model.preset=tiny", f"data={song_dir}", "tracking=none", "trainer.accelerator=cpu", *extra]
    compose(overrides)  # registers resolvers and plugin configs
    try:
        check_job(overrides, registry.get)
    except ConfigError as exc:
        return exc.problems
    return []


def test_refuses_bitsandbytes_optimizer_under_deepspeed(song_dir):
    problems = _problems(song_dir, "backend=deepspeed", "optimizer=adamw8bit")
    assert any(p.startswith("optimizer=adamw8bit cannot run under backend=deepspeed") for p in problems)
    assert _problems(song_dir, "backend=ddp", "optimizer=adamw8bit") == []


def test_refuses_fp16_deepspeed_on_cpu_and_param_offload_below_stage3(song_dir):
    problems = _problems(song_dir, "backend=deepspeed", "precision=16-mixed", "backend.offload_parameters=true")
    assert any(p.startswith("precision=16-mixed with backend=deepspeed on a CPU") for p in problems)
    assert any(p.startswith("backend.offload_parameters=true needs backend.stage=3") for p in problems)
    assert any("backend.stage=7" in p for p in _problems(song_dir, "backend=deepspeed", "backend.stage=7"))


def test_lora_with_zero3_is_allowed_with_a_warning(song_dir):
    with pytest.warns(UserWarning, match="adapter and checkpoint save first gathers"):
        assert _problems(song_dir, "backend=deepspeed", "backend.stage=3") == []
    assert _problems(song_dir, "backend=deepspeed", "trainer.devices=2") == []
