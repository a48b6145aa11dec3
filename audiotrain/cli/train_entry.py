"""The training entry: check every job's config first, then hand over to Hydra's runner."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from audiotrain.config import resolvers
from audiotrain.plugins import registry

resolvers.register()
registry.register_configs()

PASSTHROUGH = ("--cfg", "-c", "--info", "--hydra-help", "--resolve", "--package", "-p", "--shell-completion")
from audiotrain.errors import UserError

USER_ERRORS = (UserError,)



def _forget_run_dir(cfg) -> None:
    """Remove the run directory Hydra made for a job that wrote nothing into it (``mode=plan``), and the empty
    folders above it up to the working directory."""
    import shutil

    run_dir = Path(str(cfg.paths.run_dir)).resolve()
    if not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} - {".hydra"}:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    cwd = Path.cwd().resolve()
    for parent in run_dir.parents:
        if parent == cwd or cwd not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()

def _overrides(argv: list[str]) -> tuple[list[str], bool]:
    multirun = any(a in ("-m", "--multirun") for a in argv)
    return [a for a in argv if not a.startswith("-") and "=" in a], multirun


def precheck(argv: list[str]) -> int:
    """Compose and validate every job; 0 when all are fine, else print the problems and return 2."""
    from audiotrain.config.compose import check_job, expand_sweep, search_space_jobs
    from audiotrain.config.validate import ConfigError

    overrides, multirun = _overrides(argv)
    if not multirun:
        swept = _sweep_syntax(overrides)
        if swept:
            print(f"audiotrain: {swept} gives several values, which makes a sweep: add -m (audiotrain -m ...).",
                  file=sys.stderr)
            return 2
    search = search_space_jobs(overrides) if any(o.startswith("hparams_search=") for o in overrides) else []
    multirun = multirun or bool(search)
    jobs = expand_sweep(overrides) if multirun else [overrides]
    jobs = jobs + search
    for i, job in enumerate(jobs):
        try:
            check_job(job, registry.get)
        except ConfigError as exc:
            where = (f"Sweep job {i} ({' '.join(job)}): " if i < len(jobs) - len(search) else
                     f"Search space value {job[-1]}: ") if multirun else ""
            print(f"audiotrain: {where}{exc}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"audiotrain: {exc}", file=sys.stderr)
            return 2
    return 0


def _sweep_syntax(overrides: list[str]) -> str | None:
    """The first override with several values (``a=1,2``, ``choice(...)``, ``interval(...)``), if any."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from audiotrain.config.compose import normalize_overrides

    parser = OverridesParser.create()
    for line in normalize_overrides(overrides):
        try:
            if parser.parse_override(line).is_sweep_override():
                return line
        except Exception:  # a malformed override: the config check explains it
            continue
    return None


def _skip_finished(cfg, job) -> float | None | bool:
    """In a re-run sweep: False when this job must run (or resume), else the finished job's metric (it is
    skipped). Checked before the training stack is imported, so skipping costs no start-up time."""
    from pathlib import Path

    from audiotrain.train import sweep_job

    own_dir = Path(str(cfg.paths.run_dir)).resolve()
    sweep_job.check_same_job(own_dir, job)
    done = sweep_job.finished_summary(own_dir)
    if done is None:
        return False
    if done.get("diverged"):
        print(f"Sweep job {job.num} ({job.label()}) diverged before: skipped. Run directory: {own_dir}",
              file=sys.stderr)
        return _unscored(job)
    from audiotrain.train.val_split import default_metric

    metric = default_metric(cfg)
    value = sweep_job.metric_value(done, metric)
    shown = f"{metric} {value:.4f}" if value is not None else f"no {metric}"
    print(f"Sweep job {job.num} ({job.label()}) finished before ({shown}): skipped. Run directory: {own_dir}",
          file=sys.stderr)
    return value


def _unscored(job) -> float | None:
    """The result of a job the sweep stopped: a search sweeper (Optuna) needs a number, and +inf never wins; the
    study is rebuilt from the recorded results when the same command continues the sweep."""
    return None if job.sweeper == "BasicSweeper" else float("inf")


def _task(cfg):
    from hydra.core.hydra_config import HydraConfig

    from audiotrain.train import sweep_job

    overrides = list(HydraConfig.get().overrides.task)
    job = sweep_job.current()
    if job is not None and cfg.get("mode", "train") == "train":
        reason = sweep_job.stop_reason(job.sweep_dir)
        if reason is not None:
            print(f"Sweep job {job.num} ({job.label()}) not started: the sweep is stopping ({reason}).",
                  file=sys.stderr)
            return _unscored(job)
        try:
            skipped = _skip_finished(cfg, job)
        except USER_ERRORS as exc:
            print(f"audiotrain: {exc}", file=sys.stderr)
            raise
        if skipped is not False:
            return skipped
    from audiotrain.train.console import console
    from audiotrain.train.nonfinite import TrainingDiverged
    from audiotrain.train.run import train
    from audiotrain.train.val_split import default_metric

    try:
        if cfg.get("mode", "train") == "eval":
            from audiotrain.train.evaluate import eval_message, run_eval

            console.print(eval_message(run_eval(cfg, overrides)))
            return None
        if cfg.get("mode", "train") == "plan":
            from audiotrain.train.plan import run_plan

            console.print(run_plan(cfg, overrides), highlight=False)
            _forget_run_dir(cfg)
            return None
        summary = train(cfg, overrides)
    except TrainingDiverged as exc:
        console.print(f"[red]audiotrain: {exc}[/]")
        if job is None:
            sys.exit(2)
        # in a sweep a diverged job is one of its results (status DIVERGED): the other jobs go on
        return _unscored(job)
    except USER_ERRORS as exc:
        console.print(f"[red]audiotrain: {exc}[/]")
        if job is not None:
            raise
        sys.exit(2)
    if summary.get("global_rank", 0) != 0:
        return None
    metric = default_metric(cfg)
    value = sweep_job.metric_value(summary, metric)
    console.print(done_message(summary))
    if job is not None and not summary.get("completed", True):  # stop the sweep cleanly; the same command resumes
        sweep_job.request_stop(job.sweep_dir, f"sweep job {job.num} stopped at step {summary.get('stopped_at')}")
        return _unscored(job)
    if job is not None and job.sweeper != "BasicSweeper" and value is None:
        raise UserError(f"sweep_metric={metric} was never logged by sweep job {job.num}, so the search cannot "
                        f"score it: use one of {', '.join(sorted(summary.get('last_metrics') or {}))}.")
    return value


def done_message(summary: dict) -> str:
    """What a person reads at the end of a run: the trend, and where everything is."""
    head = "[bold green]Done.[/]" if summary.get("completed", True) else "[bold yellow]Stopped early.[/]"
    if summary.get("loss_start_mean") is None:  # resumed from a checkpoint already at trainer.max_steps
        lines = [f"\n{head} {summary['steps']} steps; none trained by this command (its checkpoint was already at "
                 f"step {summary['steps']}: raise trainer.max_steps to train further)"]
    else:
        lines = [f"\n{head} {summary['steps']} steps; training loss {summary['loss_start_mean']:.4f} → "
                 f"{summary['loss_end_mean']:.4f} (mean of the first and last 10% of steps)"]
    if summary.get("nonfinite_steps"):
        lines.append(f"  {summary['nonfinite_steps']} step(s) had a NaN/Inf loss or gradient and were skipped "
                     f"(train/nonfinite_steps)")
    val = summary.get("val_loss") or []
    if val:
        lines.append(f"  held-out val/loss ({summary.get('val_examples', 0)} examples, fixed noise): "
                     + _trend(val))
    fit = summary.get("train_fixed_loss") or []
    if len(fit) > 1:
        lines.append(f"  train_fixed/loss (training examples, fixed noise): {fit[0][1]:.4f} at step {fit[0][0]} → "
                     f"{fit[-1][1]:.4f} at step {fit[-1][0]}")
    if not val:
        lines.append("  no held-out data: add val_data=PATH or dataset.val_fraction=0.1 to measure val/loss")
    md = summary.get("eval_mel_distance") or []
    if md:
        lines.append(f"  eval mel distance (generated vs reference): {md[0][1]:.4f} at step {md[0][0]} → "
                     f"{md[-1][1]:.4f} at step {md[-1][0]}")
    lines.append(f"  run directory: {summary['run_dir']}")
    lines.append(f"  adapter:       {summary['adapter_dir']}" + ("" if summary.get("completed", True) else
                                                                    f" (as of step {summary['steps']})"))
    if summary.get("mlflow_run_id"):
        from audiotrain.tracking.ui_urls import run_lines

        lines.append(f"  MLflow run:    {summary['mlflow_run_id']} in {summary['tracking_uri']}")
        lines += run_lines(summary["tracking_uri"], summary["mlflow_run_id"], summary.get("experiment_id"))
    return "\n".join(lines)


def _trend(values: list) -> str:
    """``1.23 at step 0 → 0.98 at step 300 (-20%; best 0.95 at step 250)``: where it started, ended, was best."""
    (s0, v0), (s1, v1) = values[0], values[-1]
    if len(values) == 1:
        return f"{v0:.4f} at step {s0}"
    best_step, best = min(values, key=lambda sv: sv[1])
    change = f"{(v1 - v0) / v0 * 100:+.0f}%" if v0 else "n/a"
    text = f"{v0:.4f} at step {s0} → {v1:.4f} at step {s1} ({change}"
    if best_step != s1:
        text += f"; best {best:.4f} at step {best_step}"
    return text + ")"


def run(argv: list[str]) -> int:
    import hydra

    if not any(a.split("=")[0] in PASSTHROUGH for a in argv):
        code = precheck(argv)
        if code:
            return code
    from audiotrain.config.compose import normalize_overrides

    from audiotrain.train.sweep_job import ID_ENV, sweep_id

    main = hydra.main(version_base="1.3", config_path="pkg://audiotrain.conf", config_name="train")(_task)
    sys.argv = [sys.argv[0]] + [a if a.startswith("-") else normalize_overrides([a])[0] for a in argv]
    os.environ[ID_ENV] = sweep_id(_overrides(argv)[0])  # names the sweep dir: the same command finds it again
    from audiotrain.tracking import sweep

    try:
        main()
    except KeyboardInterrupt as exc:  # a second Ctrl-C: stopped at once
        sweep_dir = sweep.mark_interrupted(str(exc) or "interrupted")
        if sweep_dir is None:
            raise
        stopped = (sweep_dir, "interrupted")
    else:
        if sweep.DIVERGED:  # the sweep went on and finished; its diverged jobs make the command fail
            sweep_dir, jobs = sweep.DIVERGED.pop()
            print(f"\naudiotrain: sweep finished, but job(s) {', '.join(map(str, jobs))} diverged (NaN/Inf losses): "
                  f"see their job_status.json in {sweep_dir}.", file=sys.stderr)
            return 2
        if not sweep.STOPPED:
            return 0
        stopped = sweep.STOPPED.pop()
    print(f"\naudiotrain: sweep stopped ({stopped[1]}). Run the same command again to continue: finished jobs are "
          f"skipped, stopped ones resume from their checkpoints ({stopped[0]}).", file=sys.stderr)
    return 130
