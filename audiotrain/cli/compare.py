"""``audiotrain compare SWEEP_OR_EXPERIMENT``: a table of the runs and a PNG of their curves and axes.

The argument is a sweep directory (with ``mlflow_parent_run_id``), a parent run id, or an experiment name
(``audiotrain/acestep``). The table (rich) lists each run's swept overrides, status and final metric; the PNG has
the loss curves of all runs and the final metric against each swept axis. For a sweep, the PNG is logged to the
parent run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _runs(client, target: str):
    """(experiment id, parent run id or None, runs) for a sweep dir, a parent run id or an experiment name (then
    every run but sweep parents)."""
    from audiotrain.tracking.ui_views import TRAINING_RUNS

    p = Path(target)
    if (p / "mlflow_parent_run_id").is_file():
        target = (p / "mlflow_parent_run_id").read_text().strip()
    exp = client.get_experiment_by_name(target)
    if exp is not None:
        return exp.experiment_id, None, client.search_runs([exp.experiment_id], TRAINING_RUNS)
    try:
        parent = client.get_run(target)
    except Exception:
        return None, None, []
    exp_id = parent.info.experiment_id
    return exp_id, parent.info.run_id, client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")


def compare(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="audiotrain compare", description=__doc__.splitlines()[0])
    ap.add_argument("target", help="sweep directory, parent run id, or experiment name")
    ap.add_argument("--metric", default=None,
                    help="final metric to compare (default val/loss when the runs logged it, else train_fixed/loss)")
    ap.add_argument("--curve", default="train/loss", help="metric plotted over steps (default train/loss)")
    ap.add_argument("--uri", default=None, help="tracking store (default sqlite:///./mlflow.db)")
    ap.add_argument("--out", type=Path, default=None, help="PNG path (default compare.png in the sweep dir or here)")
    args = ap.parse_args(argv)
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient
    from rich.console import Console
    from rich.table import Table

    from audiotrain.tracking.mlflow_store import default_uri
    from audiotrain.tracking.ui_views import swept_params

    client = MlflowClient(tracking_uri=args.uri or default_uri())
    exp_id, parent_id, runs = _runs(client, args.target)
    if not runs:
        print(f"audiotrain compare: no runs found for {args.target}: give a sweep directory, a parent run id or an "
              f"experiment name such as audiotrain/acestep.", file=sys.stderr)
        return 2
    if args.metric is None:
        args.metric = "val/loss" if any("val/loss" in r.data.metrics for r in runs) else "train_fixed/loss"
    axes = swept_params(runs)
    table = Table(title=f"{len(runs)} runs — {args.metric}, best first")
    # with swept axes, a job is named by its values (the axis columns) and its number; else by its run name
    first = "job" if axes else "run"
    table.add_column(first, no_wrap=True, justify="right" if axes else "left", min_width=len(first))
    for a in axes:
        table.add_column(a[len("override."):], no_wrap=True, min_width=len(a) - len("override."))
    table.add_column("status", no_wrap=True)
    table.add_column(args.metric, no_wrap=True, justify="right", min_width=len(args.metric))
    for r in sorted(runs, key=lambda r: r.data.metrics.get(args.metric, float("inf"))):
        value = r.data.metrics.get(args.metric)
        name = r.data.tags.get("audiotrain.job", r.info.run_id[:8]) if axes else (r.info.run_name or r.info.run_id[:8])
        table.add_row(name, *[r.data.params.get(a, "") for a in axes], r.info.status,
                      "" if value is None else f"{value:.4f}")
    Console().print(table)
    out = args.out or (Path(args.target) / "compare.png" if Path(args.target).is_dir() else Path("compare.png"))
    _plot(client, runs, axes, args.metric, args.curve, out)
    print(f"Wrote {out}")
    if parent_id:
        client.log_artifact(parent_id, str(out))
    print(_ui_lines(client, args.uri or default_uri(), exp_id, parent_id, axes, args.metric))
    return 0


def _ui_lines(client, uri: str, exp_id: str, parent_id: str | None, axes: list[str], metric: str) -> str:
    """The same runs in the MLflow UI: the sweep's jobs (or the experiment's runs) with these axes as columns."""
    from audiotrain.tracking.ui_urls import base_url, experiment_url, ui_command
    from audiotrain.tracking.ui_views import save_experiment_view, save_sweep_view

    try:
        if parent_id:
            name = client.get_run(parent_id).info.run_name
            view = save_sweep_view(client, exp_id, parent_id, name, axes, metric)
        else:
            view = save_experiment_view(client, exp_id)
    except Exception:  # a read-only store: the plain runs page
        view = None
    line = f"In the MLflow UI: {experiment_url(base_url(uri), exp_id, view)}"
    cmd = ui_command(uri)
    return line + (f"\n                  (start the UI first: {cmd})" if cmd else "")


def _plot(client, runs, axes, metric: str, curve: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(axes))
    fig = plt.figure(figsize=(max(10, 4 * n), 8), dpi=100)
    grid = fig.add_gridspec(2, n)
    curves = fig.add_subplot(grid[0, :])  # the loss curves of every job on top, one panel per swept axis below
    ax = [curves, *[fig.add_subplot(grid[1, i]) for i in range(n)]]
    scored = [r for r in runs if metric in r.data.metrics]
    best = min(scored, key=lambda r: r.data.metrics[metric]).info.run_id if scored else None
    many = len(runs) > 8  # then: every job thin and grey, the best one highlighted and named
    for r in runs:
        hist = sorted(client.get_metric_history(r.info.run_id, curve), key=lambda m: m.step)
        if not hist:
            continue
        name = r.info.run_name or r.info.run_id[:8]
        if many and r.info.run_id != best:
            curves.plot([m.step for m in hist], [m.value for m in hist], color="0.75", linewidth=0.8)
        else:
            curves.plot([m.step for m in hist], [m.value for m in hist], linewidth=2 if r.info.run_id == best else 1.2,
                        label=f"{name} (best {metric})" if r.info.run_id == best else name, zorder=3)
    curves.set_title(f"{curve} of {len(runs)} jobs" + (" (grey: the others)" if many else ""))
    curves.set_xlabel("step")
    curves.legend(fontsize=8, loc="upper right")
    for i, a in enumerate(axes or ["(none)"], start=1):
        xs, ys = [], []
        for r in runs:
            if metric in r.data.metrics:
                xs.append(r.data.params.get(a, "-"))
                ys.append(r.data.metrics[metric])
        def order(v: str):
            try:
                return (0, float(v), v)
            except ValueError:
                return (1, 0.0, v)

        cats = sorted(set(xs), key=order)  # numbers in numeric order, then the rest alphabetically
        ax[i].scatter([cats.index(x) for x in xs], ys)
        ax[i].set_xticks(range(len(cats)), cats)
        ax[i].set_title(f"{metric} vs {a.replace('override.', '')}")
        ax[i].set_xlabel(a.replace("override.", ""))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(out))
    plt.close(fig)
