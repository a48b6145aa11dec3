"""`-m` sweeps: MLflow parent/child runs, linked alpha, same samples in every job, re-runs skip finished jobs and
resume interrupted ones, `audiotrain compare`, the Optuna search preset and the launcher presets."""
from __future__ import annotations

import csv
import json

import pytest
import yaml

from audiotrain.train.sweep_job import sweep_id
from tests.core.conftest import Sweep, cli_env


def _parent_and_children(client, experiment="audiotrain/acestep"):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("audiotrain.sweep") == "parent"]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children, runs


def test_sweep_parent_children_and_linked_alpha(sweep4: Sweep):
    client = sweep4.client()
    parent, children, runs = _parent_and_children(client)
    assert len(runs) == 5 and len(children) == 4
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep.axes"] == "lora.r,scheduler"
    assert "lora.r=4,8" in parent.data.params["sweep.overrides"]
    # each child: its swept values as override.* columns, alpha linked to rank, named after its values
    seen = set()
    for c in children:
        r = int(c.data.params["override.lora.r"])
        assert float(c.data.params["lora.alpha"]) == 2 * r
        assert c.info.run_name == f"lora.r={r} scheduler={c.data.params['override.scheduler']}"
        assert c.info.status == "FINISHED" and c.data.metrics["eval/loss"] > 0
        seen.add((r, c.data.params["override.scheduler"]))
    assert seen == {(4, "constant"), (4, "cosine_restarts"), (8, "constant"), (8, "cosine_restarts")}
    assert all(parent.data.tags[f"job.{i}.status"] == "COMPLETED" for i in range(4))
    best = min(children, key=lambda c: c.data.metrics["eval/loss"])
    assert parent.data.metrics["best/eval/loss"] == pytest.approx(best.data.metrics["eval/loss"])
    assert parent.data.tags["best.run_id"] == best.info.run_id
    assert parent.data.tags["best.overrides"] == best.info.run_name
    rows = list(csv.DictReader((sweep4.sweep_dir / "sweep_jobs.csv").open()))
    assert sorted((r["override.lora.r"], r["override.lora.alpha"]) for r in rows) == [
        ("4", "8"), ("4", "8"), ("8", "16"), ("8", "16")]
    assert all(r["status"] == "COMPLETED" and float(r["eval/loss"]) > 0 for r in rows)
    assert "sweep_jobs.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    # the jobs ran in the joblib workers, not in the launching process, and still became children
    assert (sweep4.sweep_dir / "sweep_command.txt").read_text().startswith("audiotrain -m ")


def test_every_job_renders_the_same_prompts_at_the_same_steps(sweep4: Sweep):
    client = sweep4.client()
    _, children, _ = _parent_and_children(client)
    listings = []
    for c in children:
        files = sorted(a.path for a in client.list_artifacts(c.info.run_id, "samples/step_6"))
        listings.append([f.rsplit("/", 1)[-1] for f in files])
    assert listings[0] and all(lst == listings[0] for lst in listings), listings
    assert any(f.endswith(".wav") for f in listings[0]) and any(f.endswith(".png") for f in listings[0])
    prompts = {(sweep4.sweep_dir / str(j) / "samples" / "step_6").glob("prompt_*.md").__next__().read_text()
               for j in range(4)}
    assert len(prompts) == 1  # same prompt text and seed in every job


def test_rerunning_the_sweep_skips_finished_jobs(sweep4: Sweep):
    client = sweep4.client()
    parent, children, runs = _parent_and_children(client)
    before = {c.info.run_id: [m.step for m in client.get_metric_history(c.info.run_id, "train/loss")] for c in children}
    again = sweep4.run(*sweep4.argv)
    assert again.returncode == 0, again.stderr[-3000:]
    out = again.stdout + again.stderr
    assert out.count("finished before") == 4 and "skipped" in out
    parent2, children2, runs2 = _parent_and_children(client)
    assert parent2.info.run_id == parent.info.run_id and len(runs2) == len(runs)  # no new runs
    assert parent2.data.tags["sweep.runs"] == "2" and parent2.info.status == "FINISHED"
    after = {c.info.run_id: [m.step for m in client.get_metric_history(c.info.run_id, "train/loss")] for c in children2}
    assert after == before and all(steps == [1, 2, 3, 4, 5, 6] for steps in after.values())


def test_compare_prints_a_table_and_logs_the_png(sweep4: Sweep):
    p = sweep4.run("compare", str(sweep4.sweep_dir), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "lora.r" in p.stdout and "scheduler" in p.stdout and "eval/loss" in p.stdout
    assert p.stdout.count("COMPLETED") + p.stdout.count("FINISHED") >= 4
    assert (sweep4.sweep_dir / "compare.png").stat().st_size > 10_000
    parent, _, _ = _parent_and_children(sweep4.client())
    assert "compare.png" in {a.path for a in sweep4.client().list_artifacts(parent.info.run_id)}


def test_an_interrupted_sweep_resumes_into_the_same_child_runs(song_dir, tmp_path):
    """Job 1 is stopped at step 2 (`quit@2` in its control file): the sweep stops; the same command again skips
    job 0 and continues job 1 from its checkpoint in the same MLflow child run."""
    argv = ["-m", "model=acestep", f"data={song_dir}", "debug=smoke", "trainer.max_steps=4",
            "trainer.every_n_train_steps=4", "trainer.every_plot_step=0", "trainer.stdin_control=false", "lora.r=4,8"]
    sweep = Sweep(tmp_path, cli_env(tmp_path), argv, tmp_path / "exps" / "logs" / "chinese_rap_lora" /
                  f"sweep_{sweep_id([a for a in argv if '=' in a])}", None)  # type: ignore[arg-type]
    (sweep.sweep_dir / "1").mkdir(parents=True)
    (sweep.sweep_dir / "1" / "control").write_text("quit@2\n")
    first = sweep.run(*argv)
    assert first.returncode == 130, first.stderr[-3000:]
    assert "Run the same command again to continue" in first.stderr
    client = sweep.client()
    parent, children, _ = _parent_and_children(client)
    assert parent.info.status == "KILLED" and "stopped at step 2" in parent.data.tags["sweep.stopped"]
    (stopped,) = [c for c in children if c.data.params["override.lora.r"] == "8"]
    assert stopped.info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(stopped.info.run_id, "train/loss")] == [1, 2]
    assert (sweep.sweep_dir / "1" / "checkpoints" / "manual-step=2.ckpt").is_file()

    second = sweep.run(*argv)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Sweep job 0 (lora.r=4) finished before" in second.stdout + second.stderr
    assert "Resuming from" in second.stderr
    parent2, children2, _ = _parent_and_children(client)
    assert parent2.info.run_id == parent.info.run_id and parent2.info.status == "FINISHED"
    assert "sweep.stopped" not in parent2.data.tags
    assert {c.info.run_id for c in children2} == {c.info.run_id for c in children}  # the same child runs
    resumed = client.get_run(stopped.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(stopped.info.run_id, "train/loss")] == [1, 2, 3, 4]
    assert json.loads((sweep.sweep_dir / "1" / "summary.json").read_text())["completed"] is True


def test_optuna_search_optimises_the_sweep_metric(song_dir, tmp_path):
    argv = ["model=acestep", f"data={song_dir}", "debug=smoke", "trainer.max_steps=3", "trainer.every_n_train_steps=3",
            "trainer.every_plot_step=0", "trainer.stdin_control=false", "hparams_search=lora_optuna",
            "hydra.sweeper.n_trials=2"]
    sweep = Sweep(tmp_path, cli_env(tmp_path), argv, tmp_path, None)  # type: ignore[arg-type]
    p = sweep.run(*argv)
    assert p.returncode == 0, p.stderr[-3000:]
    parent, children, _ = _parent_and_children(sweep.client())
    assert len(children) == 2 and parent.data.params["sweep.sweeper"] == "OptunaSweeper"
    assert parent.data.tags["sweep.axes"] == "lora.r,lora.alpha,optimizer.lr"
    for c in children:
        assert int(c.data.params["lora.r"]) in (4, 8, 16, 32, 64)
        assert 1e-5 <= float(c.data.params["optimizer.lr"]) <= 1e-3
    (sweep_dir,) = (tmp_path / "exps" / "logs" / "chinese_rap_lora").glob("sweep_lora_optuna-*")
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best = min(c.data.metrics["eval/loss"] for c in children)
    assert result["best_value"] == pytest.approx(best)
    assert parent.data.metrics["best/eval/loss"] == pytest.approx(best)


def test_a_bad_search_space_value_fails_before_any_trial(song_dir, tmp_path):
    sweep = Sweep(tmp_path, cli_env(tmp_path), [], tmp_path, None)  # type: ignore[arg-type]
    p = sweep.run("-m", "model=acestep", f"data={song_dir}", "hparams_search=lora_optuna", "optimizer.lr=interval(-1e-3,1e-3)",
                  timeout=120)
    assert p.returncode == 2
    assert "optimizer.lr=-0.001 must be a positive number" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "mlflow.db").exists()
    p = sweep.run("model=acestep", f"data={song_dir}", "lora.r=4,8", timeout=120)
    assert p.returncode == 2 and "lora.r=4,8 gives several values" in p.stderr and "add -m" in p.stderr


def test_sweep_dir_is_named_after_the_jobs_not_the_launcher():
    a = sweep_id(["model=acestep", "lora.r=4,8", "scheduler=constant,cosine"])
    assert a.startswith("lora.r+scheduler-")
    assert sweep_id(["model=acestep", "lora.r=4,8", "scheduler=constant,cosine", "launcher=parallel",
                     "hydra.launcher.n_jobs=4"]) == a
    assert sweep_id(["model=acestep", "lora.r=4,16", "scheduler=constant,cosine"]) != a
    assert sweep_id(["model=acestep", "hparams_search=lora_optuna"]).startswith("lora_optuna-")


def test_launcher_presets_compose():
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from audiotrain.config import resolvers
    from audiotrain.plugins import registry

    resolvers.register()
    registry.register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="audiotrain.conf", version_base="1.3"):
        par = compose(config_name="train", overrides=["model=acestep", "launcher=parallel"], return_hydra_config=True)
        assert par.hydra.launcher._target_.endswith("JoblibLauncher") and par.hydra.launcher.n_jobs == 2
        slurm = compose(config_name="train", overrides=["model=acestep", "launcher=slurm", "trainer.devices=4",
                                                        "trainer.num_nodes=2"], return_hydra_config=True)
        assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")
        assert OmegaConf.select(slurm, "hydra.launcher.tasks_per_node") == 4
        assert OmegaConf.select(slurm, "hydra.launcher.gpus_per_node") == 4
        assert OmegaConf.select(slurm, "hydra.launcher.nodes") == 2
    GlobalHydra.instance().clear()


def test_a_launcher_whose_plugin_is_missing_says_how_to_install_it(song_dir, tmp_path):
    pytest.importorskip("hydra_plugins")
    try:
        import hydra_plugins.hydra_ray_launcher  # noqa: F401
        pytest.skip("the Ray launcher is installed here")
    except ImportError:
        pass
    sweep = Sweep(tmp_path, cli_env(tmp_path), [], tmp_path, None)  # type: ignore[arg-type]
    p = sweep.run("-m", "model=acestep", f"data={song_dir}", "launcher=ray", "lora.r=4,8", timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "launcher=ray needs the Hydra plugin hydra-ray-launcher" in p.stderr
    assert "pip install 'audiotrain[ray]'" in p.stderr
