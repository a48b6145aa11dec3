"""mode=eval with model.init_from=RUN_DIR on tiny VALL-E: the earlier run's final adapter is what gets scored."""
from __future__ import annotations

import pytest


@pytest.mark.slow  # a training run and two evaluations
def test_mode_eval_scores_the_init_from_run(valle_cfg):
    from audiotrain.train.evaluate import run_eval
    from audiotrain.train.run import train

    s = train(valle_cfg("trainer.max_steps=4", "trainer.eval_every_n_steps=4", "trainer.every_n_train_steps=4",
                        "dataset.batch_size=2", "model.eval_max_ar_steps=8", "trainer.eval_audio=true",
                        "optimizer.lr=5e-2", "trainer.eval_prompts=2", run="trained"))
    (step0, untrained), (step4, trained) = s["eval_mel_distance"]
    assert (step0, step4) == (0, 4) and untrained != trained  # the tiny model's samples moved
    result = run_eval(valle_cfg("mode=eval", f"model.init_from={s['run_dir']}", "model.eval_max_ar_steps=8",
                                "trainer.eval_prompts=2", run="scored"))
    # the same adapter weights, prompts and seeds as the training run's last periodic eval
    assert abs(result["mel_distance"] - trained) < 1e-9
    base = run_eval(valle_cfg("mode=eval", "model.eval_max_ar_steps=8", "trainer.eval_prompts=2", run="base"))
    assert abs(base["mel_distance"] - untrained) < 1e-9
