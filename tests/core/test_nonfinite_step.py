"""The step rule alone (``audiotrain.train.nonfinite.guarded_step``) per precision and backend, with stand-ins for
Lightning's trainer and optimizers, and the guard's counting, resume and message (issue 13, point 3)."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from tests.core.test_nonfinite import _same


class _Strategy:
    def __init__(self, world_size=1, others_bad=False):
        self.world_size, self.others_bad, self.asked = world_size, others_bad, []

    def reduce_boolean_decision(self, decision, all=True):
        self.asked.append(decision)
        return decision or self.others_bad


class FakeDeepSpeedStrategy(_Strategy):
    pass


def _step(loss: float, grad: float, *, scaler=None, strategy=None):
    from types import SimpleNamespace

    from audiotrain.train.nonfinite import guarded_step

    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    calls = []
    real = opt.step

    def step(closure=None):
        calls.append(closure())
        return real()

    opt.step = step
    module = SimpleNamespace(_window={"loss": (torch.tensor(loss), 1)}, step_grad_norm=None, step_nonfinite=None,
                             trainer=SimpleNamespace(strategy=strategy or _Strategy(),
                                                     precision_plugin=SimpleNamespace(scaler=scaler)))

    def closure():
        w.grad = torch.full((2,), grad)
        return torch.tensor(loss)

    guarded_step(module, opt, closure)
    return module, w, calls


def test_step_rule_fp32_bf16_skips_nan_gradients_before_the_optimizer():
    module, w, calls = _step(1.0, float("nan"))
    assert module.step_nonfinite is True and calls == [] and w.grad is None and torch.equal(w, torch.ones(2))
    module, w, calls = _step(1.0, 1.0)
    assert module.step_nonfinite is False and len(calls) == 1 and float(module.step_grad_norm) == pytest.approx(2 ** .5)
    assert torch.allclose(w, torch.full((2,), 0.9))


def test_step_rule_fp16_leaves_overflowing_gradients_to_the_scaler_and_skips_nan_losses():
    scaler = object()  # a GradScaler: gradients are still scaled when checked
    module, w, calls = _step(1.0, float("inf"), scaler=scaler)
    assert module.step_nonfinite is False and len(calls) == 1  # the scaler's own skip: not counted here
    assert module.step_grad_norm is None  # a scaled norm is not the gradient norm
    module, w, calls = _step(float("nan"), 1.0, scaler=scaler)
    assert module.step_nonfinite is True and calls == [] and torch.equal(w, torch.ones(2))


def test_step_rule_ranks_agree():
    strategy = _Strategy(world_size=2, others_bad=True)
    module, w, calls = _step(1.0, 1.0, strategy=strategy)  # finite here, NaN on another rank
    assert strategy.asked == [False] and module.step_nonfinite is True and calls == []


def test_step_rule_deepspeed_steps_in_its_engine_and_counts_nan_losses():
    module, w, calls = _step(float("nan"), float("nan"), strategy=FakeDeepSpeedStrategy())
    assert len(calls) == 1 and module.step_nonfinite is True  # DeepSpeed's engine steps (and skips) itself
    module, w, calls = _step(1.0, 1.0, strategy=FakeDeepSpeedStrategy())
    assert len(calls) == 1 and module.step_nonfinite is False


def test_guard_counts_resumes_and_names_what_was_kept(tmp_path):
    from types import SimpleNamespace

    from audiotrain.train.nonfinite import NonFiniteGuard, TrainingDiverged

    (tmp_path / "checkpoints").mkdir()
    for name in ("step=4.ckpt", "step=6.ckpt", "manual-step=7.ckpt", "last.ckpt", ".step=8.ckpt.x.tmp"):
        (tmp_path / "checkpoints" / name).write_bytes(b"")
    (tmp_path / "adapters" / "step_6").mkdir(parents=True)
    guard = NonFiniteGuard(3, tmp_path, advice="lower optimizer.lr (now 1)", every=2)
    trainer = SimpleNamespace(global_step=7, is_global_zero=True)
    module = SimpleNamespace(step_nonfinite=False, step_metrics={"train/loss": float("nan")})
    guard.on_train_start(trainer, module)
    for step, bad in [(8, True), (9, False), (10, True), (11, True)]:
        trainer.global_step, module.step_nonfinite = step, bad
        guard.on_train_batch_end(trainer, module, None, None, 0)
    assert (guard.total, guard.in_a_row, guard.first_bad) == (3, 2, 10)
    again = NonFiniteGuard(3, tmp_path, advice="lower optimizer.lr (now 1)", every=2)
    again.load_state_dict(guard.state_dict())  # a resumed run continues the streak
    again.on_train_start(trainer, module)
    trainer.global_step = 12
    with pytest.raises(TrainingDiverged) as exc:
        again.on_train_batch_end(trainer, module, None, None, 0)
    assert str(exc.value) == (
        "Training diverged: the loss or gradients were NaN/Inf for 3 optimizer steps in a row "
        "(trainer.max_nonfinite_steps=3), from step 10 (loss nan) to step 12; those steps were skipped, so the "
        f"weights are still those of step 9: the last good checkpoint is {tmp_path}/checkpoints/manual-step=7.ckpt "
        f"and the last good adapter {tmp_path}/adapters/step_6 (no final adapter was written); to try next: lower "
        "optimizer.lr (now 1), in a new run (resume=auto and ckpt_path= continue with the checkpoint's optimizer "
        "state, its learning rate included).")
    empty = NonFiniteGuard(1, tmp_path / "none", every=5)
    empty.first_bad, empty.in_a_row = 3, 1
    assert "nothing was saved before step 3 (saves come every trainer.every_n_train_steps=5 steps)" in \
        empty.diverged_message(3)


def test_advice_names_the_values_of_the_run(tiny_cfg):
    from audiotrain.train.nonfinite import advice

    assert advice(tiny_cfg("optimizer.lr=0.03", "precision=bf16-mixed"), "bf16-mixed") == \
        "lower optimizer.lr (now 0.03), or precision=32 (now bf16-mixed), or a smaller trainer.gradient_clip_val " \
        "(now 0.5)"
    assert advice(tiny_cfg("trainer.gradient_clip_val=0", "precision=16-mixed"), "16-mixed").endswith(
        "or precision=bf16-mixed or precision=32 (now 16-mixed), or trainer.gradient_clip_val=1.0 (now off)")


def test_step_rule_deepspeed_stage0_fp32_leaves_the_torch_update_out():
    """At ZeRO stage 0 in fp32 DeepSpeed's engine steps the plain torch optimizer: on a bad step the engine still
    runs its step, without that optimizer's update; the next good step updates again."""
    from types import SimpleNamespace

    from audiotrain.train.nonfinite import guarded_step

    w = torch.nn.Parameter(torch.ones(2))
    inner = torch.optim.AdamW([w], lr=0.1)
    engine_steps = []

    def engine_step(closure=None):  # what Lightning's DeepSpeed precision plugin and the engine do
        closure()
        engine_steps.append(1)
        inner.step()
        inner.zero_grad()

    strategy = FakeDeepSpeedStrategy()
    strategy.deepspeed_engine = SimpleNamespace(optimizer=inner)
    module = SimpleNamespace(_window={}, step_grad_norm=None, step_nonfinite=None,
                             trainer=SimpleNamespace(strategy=strategy, precision_plugin=SimpleNamespace()))
    lightning_opt = SimpleNamespace(step=engine_step, param_groups=inner.param_groups)
    for loss in (float("nan"), 1.0):
        module._window = {"loss": (torch.tensor(loss), 1)}

        def closure():
            w.grad = torch.full((2,), loss)
            return torch.tensor(loss)

        before = (w.detach().clone(), copy.deepcopy(inner.state_dict()))
        guarded_step(module, lightning_opt, closure)
        if math.isnan(loss):
            assert module.step_nonfinite is True and torch.equal(w, before[0]) and _same(inner.state_dict(), before[1])
            assert "step" not in vars(inner)  # the torch optimizer's own step is back
        else:
            assert module.step_nonfinite is False and not torch.equal(w, before[0])
    assert len(engine_steps) == 2  # the engine stepped both times (its counters stay Lightning's)


def test_a_resume_of_a_diverged_run_moves_its_failure_tag_aside(tmp_path):
    """A diverged run continued with resume=auto that then finishes is not shown as the divergence any more: the
    reason is kept as audiotrain.earlier_failure and in the run's note."""
    from audiotrain.tracking.mlflow_store import EARLIER_FAILURE_TAG, FAILURE_TAG, Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = Tracker(uri, "audiotrain/test")
    run_id = first.start("run", tags={"mlflow.note.content": "audiotrain model=x"})
    first.set_tags({FAILURE_TAG: "Training diverged: ...", "mlflow.note.content": "Training diverged: ..."})
    first.finish("FAILED")
    again = Tracker(uri, "audiotrain/test")
    assert again.start("run", tags={"mlflow.note.content": "audiotrain model=x resume=auto"}, run_id=run_id) == run_id
    again.finish("FINISHED")
    run = again.client.get_run(run_id)
    assert run.info.status == "FINISHED" and FAILURE_TAG not in run.data.tags
    assert run.data.tags[EARLIER_FAILURE_TAG] == "Training diverged: ..."
    assert run.data.tags["mlflow.note.content"] == ("audiotrain model=x resume=auto\n\nContinued after an earlier "
                                                    "attempt failed: Training diverged: ...")
