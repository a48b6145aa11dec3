"""AIVC's configuration rules (spec tortoise.md §1.2–1.3) as pure functions: the formulas on hand-computed
examples, every validation rule in order with the sentence it says, and the chunk check DLAS lacks."""
from __future__ import annotations

import pytest

from audiotrain_tortoise.aivc import Settings, SettingsError, overrides, plan, restart_weights, validate


def test_the_formulas_of_generate_configuration():
    s = Settings()  # 500 epochs, batch 128, accumulation 4, save/validate every 5 epochs
    p = plan(s, lines=300)
    # ceil(300 / 128) = 3 steps an epoch; 1500 steps; saves every 5 epochs = 15 steps
    assert (p.iterations, p.steps_per_epoch, p.save_every, p.validate_every) == (1500, 3, 15, 15)
    assert p.milestones == [6, 12, 27, 54, 75, 99, 150]
    # a fractional steps-per-epoch: AIVC rounds the rates from the float, the milestones from the int
    p = plan(Settings(epochs=3, batch_size=4, save_rate=2, validation_rate=1), lines=10)
    assert (p.iterations, p.steps_per_epoch, p.save_every, p.validate_every) == (9, 3, 6, 3)
    assert p.describe(Settings(epochs=3, batch_size=4)) == ("For 3 epochs with 10 lines in batches of 4, iterating "
                                                             "for 9 steps (3 steps per epoch)")


def test_cosine_restarts_plan():
    assert restart_weights(4) == [0.75, 0.5, 0.25, 0.125]
    assert restart_weights(1) == [0.0] and restart_weights(2) == [0.5, 0.25]
    p = plan(Settings(lr_scheme="cosine", epochs=100, batch_size=10), lines=50)  # 5 steps an epoch
    assert p.restart_period == 5 * 25 and p.restart_weights == [0.75, 0.5, 0.25, 0.125] and not p.milestones


def test_validation_batch_follows_the_chunk_and_the_validation_lines():
    assert plan(Settings(validation_enabled=True), 300, validation_lines=100).validation_batch_size == 32
    assert plan(Settings(validation_enabled=True), 300, validation_lines=10).validation_batch_size == 10
    assert plan(Settings(validation_enabled=True), 300, validation_lines=0).validation_batch_size == 0
    assert plan(Settings(validation_enabled=False), 300, validation_lines=100).validation_batch_size == 0


def test_an_empty_dataset_is_one_error():
    with pytest.raises(SettingsError, match="The dataset is empty"):
        validate(Settings(), lines=0)


def test_the_rules_in_order_each_said():
    # rule 2: the batch is clamped to the lines; rule 3: 60 / 4 = 15 chunks fine
    s, msgs = validate(Settings(), lines=60)
    assert (s.batch_size, s.gradient_accumulation) == (60, 4)
    assert msgs[0] == "batch 128 is larger than the 60 lines: using 60"
    assert msgs[-1] == "For 500 epochs with 60 lines in batches of 60, iterating for 500 steps (1 steps per epoch)"
    # rule 3a: chunks of fewer than 2 -> accumulation = batch / 2
    s, msgs = validate(Settings(batch_size=6, gradient_accumulation=4), lines=100)
    assert s.gradient_accumulation == 3
    assert "gradient accumulation 4 leaves chunks of fewer than 2 of the batch's 6: using 3" in msgs
    # rule 3b: accumulation -= batch % accumulation (AIVC's repair), then the chunk check finishes the job
    s, msgs = validate(Settings(batch_size=10, gradient_accumulation=4), lines=100)
    assert "gradient accumulation 4 does not divide the batch of 10: using 2" in msgs
    assert (s.batch_size, s.gradient_accumulation) == (10, 2)
    s, msgs = validate(Settings(batch_size=14, gradient_accumulation=4), lines=100)  # 4 - 14 % 4 = 2: divides
    assert s.gradient_accumulation == 2
    # AIVC's repair does not always divide (7 with 3 -> 2): the check DLAS lacks says so and picks one that does
    s, msgs = validate(Settings(batch_size=7, gradient_accumulation=3), lines=100)
    assert "gradient accumulation 3 does not divide the batch of 7: using 2" in msgs
    assert ("a batch of 7 does not split into 2 equal chunks (DLAS would crash on it): gradient accumulation 1, "
            "or a batch of 6 or 8") in msgs
    assert (s.batch_size, s.gradient_accumulation) == (7, 1)
    # rule 3: accumulation 0 -> 1
    s, msgs = validate(Settings(batch_size=8, gradient_accumulation=0), lines=100)
    assert s.gradient_accumulation == 1 and "gradient accumulation 0 must be at least 1: using 1" in msgs


def test_gpus_and_the_vram_cap():
    # rule 4: the batch splits over the GPUs; more GPUs than present are clamped
    s, msgs = validate(Settings(batch_size=9, gradient_accumulation=1, gpus=4), lines=100, device_count=2)
    assert s.gpus == 2 and s.batch_size == 8
    assert "4 GPUs asked for, 2 present: using 2" in msgs and "batch 9 does not split over 2 GPUs: using 8" in msgs
    assert "training on 2 GPUs is EXPERIMENTAL in AIVC" in msgs
    # rule 5: 6 GiB holds chunks of 2: 128 / 4 = 32 > 2 -> accumulation 64 (AIVC: "2060 6 GB -> 2:1")
    s, msgs = validate(Settings(), lines=1000, device_count=1, vram_gib=6)
    assert s.gradient_accumulation == 64 and s.batch_size // s.gradient_accumulation == 2
    assert "chunks of 32 are more than 6 GiB of GPU memory holds (at most 2): gradient accumulation 64" in msgs
    s, _ = validate(Settings(batch_size=512, gradient_accumulation=4), lines=1000, device_count=1, vram_gib=16)
    assert s.batch_size // s.gradient_accumulation == 8  # A4000 16 GB -> 8:1 (512:64)
    s, _ = validate(Settings(batch_size=4096, gradient_accumulation=4), lines=5000, device_count=1, vram_gib=80)
    assert s.gradient_accumulation == 32  # A100-80G -> 128 (4096:32)
    # no GPU: the cap is not applied
    s, msgs = validate(Settings(), lines=1000)
    assert s.gradient_accumulation == 4 and not any("GPU" in m for m in msgs)


def test_rates_resume_and_precision():
    s, msgs = validate(Settings(epochs=3, save_rate=5, validation_rate=10, resume_state="x.state"), lines=100,
                       resume_exists=False)
    assert (s.save_rate, s.validation_rate, s.resume_state) == (3, 3, "")
    assert "save frequency 5 epochs is more than the 3 epochs: using 3" in msgs
    assert "validation frequency 10 epochs is more than the 3 epochs: using 3" in msgs
    assert "resume state x.state does not exist: starting from the source model" in msgs
    s, msgs = validate(Settings(half_precision=True, bitsandbytes=True), lines=1000)
    assert not s.half_precision
    assert "half precision and bitsandbytes are both on: half precision turned off, as AIVC does" in msgs


def test_the_audiotrain_keys_of_a_plan():
    s, _ = validate(Settings(), lines=300)
    out = overrides(s, plan(s, 300))
    assert out["dataset.batch_size"] == 32 and out["trainer.accumulate_grad_batches"] == 4  # 128 in 4 chunks
    assert out["trainer.max_steps"] == 1500 and out["trainer.every_n_train_steps"] == 15
    assert out["scheduler.milestones"] == [6, 12, 27, 54, 75, 99, 150]
    s = Settings(lr_scheme="cosine", epochs=100, batch_size=10, gradient_accumulation=2)
    out = overrides(s, plan(s, 50))
    assert out["scheduler.period_steps"] == 125 and out["scheduler.restarts"] == 4 and "scheduler.milestones" not in out


def test_half_precision_with_bitsandbytes_becomes_fp32_in_the_run_config():
    from omegaconf import open_dict

    from audiotrain.plugins import registry
    from tests.conftest import compose

    cfg = compose(["model=tortoise", "precision=16-mixed"])
    with open_dict(cfg):
        msgs = registry.get("tortoise").fit_to_data(cfg, 300, 0)
    assert "half precision and bitsandbytes are both on: half precision turned off, as AIVC does" in msgs
    assert str(cfg.precision.name) == "32"
    cfg = compose(["model=tortoise", "precision=16-mixed", "optimizer=adamw"])
    with open_dict(cfg):
        registry.get("tortoise").fit_to_data(cfg, 300, 0)
    assert str(cfg.precision.name) == "16-mixed"  # without bitsandbytes half precision stays
    assert cfg.dataset.batch_size == 32 and cfg.trainer.accumulate_grad_batches == 4
    assert list(cfg.scheduler.milestones) == [6, 12, 27, 54, 75, 99, 150]


def test_stop_at_aivcs_count_or_as_dlas_loop_trains():
    # 100 lines, batch 32, 10 epochs: AIVC counts ceil(10 × ceil(100/32)) = 40 steps; DLAS's loop runs epochs
    # 0..ceil(40 / 4) = 10 inclusive (11 epochs) of floor(100/32) = 3 steps (the last batch dropped): 33 steps
    s = Settings(epochs=10, batch_size=32, gradient_accumulation=4)
    p = plan(s, lines=100)
    assert (p.iterations, p.dlas_epochs, p.dlas_steps) == (40, 11, 33)
    assert p.stop(s) == (40, 10) and overrides(s, p)["trainer.max_steps"] == 40
    d = Settings(epochs=10, batch_size=32, gradient_accumulation=4, stop_at="dlas")
    assert p.stop(d) == (33, 11)
    out = overrides(d, p)
    assert out["trainer.max_steps"] == 33 and out["trainer.max_epochs"] == 11
    assert p.describe(d).endswith("as DLAS's loop trains it (model.stop_at=dlas): 11 epochs of 3 steps, 33 steps")
    # batches that divide the lines: DLAS still trains one epoch more than AIVC shows
    p = plan(Settings(epochs=5, batch_size=10), lines=50)
    assert (p.iterations, p.dlas_steps) == (25, 30)


def test_stop_at_from_the_config_and_a_bad_value():
    from omegaconf import open_dict

    from audiotrain.plugins import registry
    from tests.conftest import compose

    cfg = compose(["model=tortoise", "model.stop_at=dlas", "trainer.max_epochs=10", "dataset.batch_size=8"])
    with open_dict(cfg):
        msgs = registry.get("tortoise").fit_to_data(cfg, 100, 0)
    # batch 8 × 4 chunks = 32: as above
    assert int(cfg.trainer.max_steps) == 33 and int(cfg.trainer.max_epochs) == 11 and "33 steps" in msgs[-1]
    bad = compose(["model=tortoise", "model.stop_at=never"])
    assert any(p.startswith("model.stop_at=never must be aivc") for p in registry.get("tortoise").validate(bad))
