"""The training entry: check every job's config first, then hand over to Hydra's runner."""
from __future__ import annotations

import sys

from audiotrain.config import resolvers
from audiotrain.plugins import registry

resolvers.register()
registry.register_configs()

PASSTHROUGH = ("--cfg", "-c", "--info", "--hydra-help", "--resolve", "--package", "-p", "--shell-completion")
from audiotrain.errors import UserError

USER_ERRORS = (UserError,)


def _overrides(argv: list[str]) -> tuple[list[str], bool]:
    multirun = any(a in ("-m", "--multirun") for a in argv)
    return [a for a in argv if not a.startswith("-") and "=" in a], multirun


def precheck(argv: list[str]) -> int:
    """Compose and validate every job; 0 when all are fine, else print the problems and return 2."""
    from audiotrain.config.compose import check_job, expand_sweep
    from audiotrain.config.validate import ConfigError

    overrides, multirun = _overrides(argv)
    jobs = expand_sweep(overrides) if multirun else [overrides]
    for i, job in enumerate(jobs):
        try:
            check_job(job, registry.get)
        except ConfigError as exc:
            where = f"Sweep job {i} ({' '.join(job)}): " if multirun else ""
            print(f"audiotrain: {where}{exc}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"audiotrain: {exc}", file=sys.stderr)
            return 2
    return 0


def _task(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from audiotrain.train.run import console, train

    overrides = list(HydraConfig.get().overrides.task)
    try:
        if cfg.get("mode", "train") == "eval":
            from audiotrain.train.evaluate import eval_message, run_eval

            console.print(eval_message(run_eval(cfg, overrides)))
            return
        summary = train(cfg, overrides)
    except USER_ERRORS as exc:
        console.print(f"[red]audiotrain: {exc}[/]")
        if HydraConfig.get().mode.name == "MULTIRUN":
            raise
        sys.exit(2)
    if summary.get("global_rank", 0) == 0:
        console.print(done_message(summary))


def done_message(summary: dict) -> str:
    """What a person reads at the end of a run: the trend, and where everything is."""
    lines = [f"\n[bold green]Done.[/] {summary['steps']} steps; training loss {summary['loss_start_mean']:.4f} → "
             f"{summary['loss_end_mean']:.4f} (mean of the first and last 10% of steps)"]
    ev = summary.get("eval_loss") or []
    if len(ev) > 1:
        lines.append(f"  eval loss (fixed examples and noise): {ev[0][1]:.4f} at step {ev[0][0]} → "
                     f"{ev[-1][1]:.4f} at step {ev[-1][0]}")
    md = summary.get("eval_mel_distance") or []
    if md:
        lines.append(f"  eval mel distance (generated vs reference): {md[0][1]:.4f} at step {md[0][0]} → "
                     f"{md[-1][1]:.4f} at step {md[-1][0]}")
    lines.append(f"  run directory: {summary['run_dir']}")
    lines.append(f"  adapter:       {summary['adapter_dir']}")
    if summary.get("mlflow_run_id"):
        lines.append(f"  MLflow run:    {summary['mlflow_run_id']} in {summary['tracking_uri']}")
        lines.append("  open the UI:   audiotrain ui   (then http://127.0.0.1:5000)")
    return "\n".join(lines)


def run(argv: list[str]) -> int:
    import hydra

    if not any(a.split("=")[0] in PASSTHROUGH for a in argv):
        code = precheck(argv)
        if code:
            return code
    from audiotrain.config.compose import normalize_overrides

    main = hydra.main(version_base="1.3", config_path="pkg://audiotrain.conf", config_name="train")(_task)
    sys.argv = [sys.argv[0]] + [a if a.startswith("-") else normalize_overrides([a])[0] for a in argv]
    main()
    return 0
