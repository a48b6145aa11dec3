"""`-m` sweeps: MLflow parent/child runs, linked alpha, same samples in every job, a stopped sweep resumed by the
same command (finished jobs skipped, the stopped job continued in its child run), `audiotrain compare`, the
Optuna search preset on the parallel launcher, and the launcher presets."""
from __future__ import annotations

import csv
import json

import pytest
import yaml

from audiotrain.train.sweep_job import sweep_id
from tests.core.conftest import Sweep, parent_and_children, steps_of
from audiotrain.config.resolvers import exp_name_for


@pytest.mark.slow  # the sweep4 fixture: a 4-job sweep run twice by the CLI, ~45 s on 2 idle cores
def test_sweep_parent_children_and_linked_alpha(sweep4: Sweep):
    client = sweep4.client()
    parent, children, runs = parent_and_children(client)
    assert len(runs) == 5 and len(children) == 4
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep.axes"] == "lora.r,scheduler"
    assert "lora.r=4,8" in parent.data.params["sweep.overrides"]
    seen = set()
    for c in children:  # swept values as override.* columns, alpha linked to rank, named after its values
        r = int(c.data.params["override.lora.r"])
        assert float(c.data.params["lora.alpha"]) == 2 * r
        assert c.info.run_name == f"lora.r={r} scheduler={c.data.params['override.scheduler']}"
        assert c.info.status == "FINISHED" and c.data.metrics["train_fixed/loss"] > 0
        assert steps_of(client, c.info.run_id) == [1, 2, 3, 4, 5, 6]
        seen.add((r, c.data.params["override.scheduler"]))
    assert seen == {(4, "constant"), (4, "cosine_restarts"), (8, "constant"), (8, "cosine_restarts")}
    assert all(parent.data.tags[f"job.{i}.status"] == "COMPLETED" for i in range(4))
    best = min(children, key=lambda c: c.data.metrics["train_fixed/loss"])
    assert parent.data.metrics["best/train_fixed/loss"] == pytest.approx(best.data.metrics["train_fixed/loss"])
    assert parent.data.tags["best.run_id"] == best.info.run_id
    assert parent.data.tags["best.overrides"] == best.info.run_name
    rows = list(csv.DictReader((sweep4.sweep_dir / "sweep_jobs.csv").open()))
    assert sorted((r["override.lora.r"], r["override.lora.alpha"]) for r in rows) == [
        ("4", "8"), ("4", "8"), ("8", "16"), ("8", "16")]
    assert all(r["status"] == "COMPLETED" and float(r["train_fixed/loss"]) > 0 for r in rows)
    assert {"sweep_jobs.csv", "multirun.yaml"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}


@pytest.mark.slow  # sweep4
def test_a_stopped_sweep_resumes_with_the_same_command(sweep4: Sweep):
    client = sweep4.client()
    first, second = sweep4.runs
    assert "Sweep job 3 (lora.r=8 scheduler=cosine_restarts) not started: the sweep is stopping" in first.stderr
    assert "Run the same command again to continue" in first.stderr
    stop = sweep4.after_stop
    tags = stop["parent"].data.tags
    assert stop["parent"].info.status == "KILLED" and tags["sweep.stopped"] == "sweep job 2 stopped at step 3"
    assert [tags[f"job.{i}.status"] for i in range(4)] == ["COMPLETED", "COMPLETED", "STOPPED", "NOT_STARTED"]
    assert len(stop["children"]) == 3
    (stopped,) = [c for c in stop["children"].values() if c.data.tags["audiotrain.job"] == "2"]
    assert stopped.info.status == "KILLED" and stop["steps"][stopped.info.run_id] == [1, 2, 3]
    assert (sweep4.sweep_dir / "2" / "checkpoints" / "manual-step=3.ckpt").is_file()
    # the same command: jobs 0-1 skipped (no new runs, metrics untouched), job 2 continued in its child run, job 3 ran
    out = second.stdout + second.stderr
    assert out.count("finished before") == 2 and "Resuming from" in out
    parent, children, _ = parent_and_children(client)
    assert parent.info.run_id == stop["parent"].info.run_id and parent.data.tags["sweep.runs"] == "2"
    assert "sweep.stopped" not in parent.data.tags and parent.info.status == "FINISHED"
    assert set(stop["children"]) < {c.info.run_id for c in children} and len(children) == 4
    for run_id, steps in stop["steps"].items():
        if run_id != stopped.info.run_id:
            assert steps_of(client, run_id) == steps == [1, 2, 3, 4, 5, 6]
    assert client.get_run(stopped.info.run_id).info.status == "FINISHED"
    assert json.loads((sweep4.sweep_dir / "2" / "summary.json").read_text())["completed"] is True
    assert not (sweep4.sweep_dir / "STOP").exists()


@pytest.mark.slow  # sweep4
def test_every_job_renders_the_same_prompts_at_the_same_steps(sweep4: Sweep):
    client = sweep4.client()
    _, children, _ = parent_and_children(client)
    listings = [sorted(a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(c.info.run_id, "samples/step_6"))
                for c in children]
    assert listings[0] and all(lst == listings[0] for lst in listings), listings
    assert any(f.endswith(".wav") for f in listings[0]) and any(f.endswith(".png") for f in listings[0])
    prompts = {next((sweep4.sweep_dir / str(j) / "samples" / "step_6").glob("prompt_*.md")).read_text()
               for j in range(4)}
    assert len(prompts) == 1  # the same prompt text and seed in every job


@pytest.mark.slow  # sweep4
def test_compare_prints_a_table_and_logs_the_png(sweep4: Sweep):
    p = sweep4.run("compare", str(sweep4.sweep_dir), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "lora.r" in p.stdout and "scheduler" in p.stdout and "train_fixed/loss" in p.stdout
    assert (sweep4.sweep_dir / "compare.png").stat().st_size > 10_000
    parent, _, _ = parent_and_children(sweep4.client())
    assert "compare.png" in {a.path for a in sweep4.client().list_artifacts(parent.info.run_id)}


@pytest.mark.slow  # two Optuna trials in joblib worker processes: ~30 s
def test_optuna_search_on_the_parallel_launcher(song_dir, tmp_path):
    """Two Optuna trials side by side in joblib worker processes: both are children of the one parent run, and
    the study's best value is the lowest train_fixed/loss of the two."""
    argv = ["model=acestep", f"data={song_dir}", "debug=smoke", "trainer.max_steps=3", "trainer.every_n_train_steps=3",
            "trainer.every_plot_step=0", "trainer.stdin_control=false", "hparams_search=lora_optuna",
            "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "launcher=parallel"]
    sweep = Sweep(tmp_path, argv)
    p = sweep.run(*argv)
    assert p.returncode == 0, p.stderr[-3000:]
    parent, children, _ = parent_and_children(sweep.client())
    assert len(children) == 2 and parent.data.params["sweep.sweeper"] == "OptunaSweeper"
    assert parent.data.tags["sweep.axes"] == "lora.r,lora.alpha,optimizer.lr"
    for c in children:
        assert int(c.data.params["lora.r"]) in (4, 8, 16, 32, 64)
        assert 1e-5 <= float(c.data.params["optimizer.lr"]) <= 1e-3
    (sweep_dir,) = (tmp_path / "exps" / "logs" / exp_name_for("acestep", str(song_dir))).glob("sweep_lora_optuna-*")
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best = min(c.data.metrics["train_fixed/loss"] for c in children)
    assert result["best_value"] == pytest.approx(best)
    assert parent.data.metrics["best/train_fixed/loss"] == pytest.approx(best)
    assert parent.info.status == "FINISHED"


def test_bad_sweep_values_fail_before_any_job(song_dir, tmp_path):
    sweep = Sweep(tmp_path, [])
    bad = ["-m", "model=acestep", f"data={song_dir}", "debug=smoke", "lora.r=4,8", "precision=32,bf16-mixed,fp8"]
    p = sweep.run(*bad, "hparams_search=lora_optuna", "optimizer.lr=interval(-1e-3,1e-3)", timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "Sweep job 0 (" in p.stderr and "optimizer.lr=-0.001 must be a positive number" in p.stderr
    assert not (tmp_path / "mlflow.db").exists()
    p = sweep.run(*bad, timeout=120)
    assert p.returncode == 2 and "Sweep job 2 (" in p.stderr and "precision=fp8 is unknown" in p.stderr
    p = sweep.run("model=acestep", f"data={song_dir}", "lora.r=4,8", timeout=120)
    assert p.returncode == 2 and "lora.r=4,8 gives several values" in p.stderr and "add -m" in p.stderr


def test_sweep_dir_is_named_after_the_jobs_not_the_launcher():
    a = sweep_id(["model=acestep", "lora.r=4,8", "scheduler=constant,cosine"])
    assert a.startswith("lora.r+scheduler-")
    assert sweep_id(["model=acestep", "lora.r=4,8", "scheduler=constant,cosine", "launcher=parallel",
                     "hydra.launcher.n_jobs=4"]) == a
    assert sweep_id(["model=acestep", "lora.r=4,16", "scheduler=constant,cosine"]) != a
    assert sweep_id(["model=acestep", "hparams_search=lora_optuna"]).startswith("lora_optuna-")


def test_a_directory_of_another_job_is_never_reused(tmp_path):
    from audiotrain.errors import UserError
    from audiotrain.train.sweep_job import SweepJob, check_same_job, finished_summary

    (tmp_path / "command.json").write_text(json.dumps({"overrides": ["lora.r=4"]}))
    check_same_job(tmp_path, SweepJob(0, ["lora.r=4"], 1, "BasicSweeper"))
    with pytest.raises(UserError, match="holds a different job .*hydra.sweep.dir"):
        check_same_job(tmp_path, SweepJob(0, ["lora.r=8"], 1, "BasicSweeper"))
    (tmp_path / "summary.json").write_text(json.dumps({"completed": False}))
    assert finished_summary(tmp_path) is None  # stopped early: resumed, not skipped


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
    try:
        import hydra_plugins.hydra_ray_launcher  # noqa: F401
        pytest.skip("the Ray launcher is installed here")
    except ImportError:
        pass
    p = Sweep(tmp_path, []).run("-m", "model=acestep", f"data={song_dir}", "launcher=ray", "lora.r=4,8", timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "launcher=ray needs the Hydra plugin hydra-ray-launcher" in p.stderr
    assert "pip install 'audiotrain[ray]'" in p.stderr
