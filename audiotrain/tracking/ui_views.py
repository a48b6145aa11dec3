"""The saved views audiotrain's MLflow URLs open: which runs a runs page lists, with which columns, in which order.

MLflow 3.17's UI starts every browser on no param or metric columns (what a person picks is kept in that browser's
localStorage), so a sweep's axes would be hidden until picked by hand. It also reads *saved views* from experiment
tags ``mlflow.sharedViewState.<key>`` — a JSON envelope ``{name, createdAt, updatedAt, state}`` whose ``state`` is
the JSON of the runs page's state (``selectedColumns``, ``columnOrder``, ``searchFilter``, ``orderByKey``,
``orderByAsc``) — and opens one when the URL carries ``viewStateShareKey=<key>``, in any browser; the view is listed
under "Views" there too. audiotrain writes two:

- ``audiotrain`` (one per experiment): every training run — sweep parents are filtered out, so a sweep's jobs are
  rows of their own rather than folded under their parent — with the loss metrics and each ``override.<key>`` whose
  value differs between runs, best first;
- ``sweep-<parent run id>``: the jobs of one sweep with its swept keys and metrics, best first.

Column keys are the UI's: ``params.`override.lora.r```, ``metrics.`val/loss```. Ordering by a metric also keeps the
UI from fetching parent runs (it does so only when sorting by start time), so the rows stay flat.
"""
from __future__ import annotations

import json
import time
from typing import Iterable, Sequence

TAG_PREFIX = "mlflow.sharedViewState."
EXPERIMENT_VIEW = "audiotrain"
TRAINING_RUNS = "tags.`audiotrain.sweep` IS NULL"  # every run but sweep parents (a sweep's jobs have no such tag)
LOSSES = ("val/loss", "train_fixed/loss", "train/loss")  # the metric columns, first present = the ranking
MAX_AXES = 40  # keeps a view far below MLflow's 20,000-character tag limit


def column(kind: str, key: str) -> str:
    """The UI's name of a column: ``column("params", "override.lora.r")`` → ``params.`override.lora.r```."""
    return f"{kind}.`{key}`"


def sweep_view_key(parent_run_id: str) -> str:
    return f"sweep-{parent_run_id}"


def swept_params(runs: Sequence) -> list[str]:
    """``override.<key>`` params whose value differs between ``runs`` (absent counts as a value), sorted."""
    keys = {k for r in runs for k in r.data.params if k.startswith("override.")}
    return sorted(k for k in keys if len({r.data.params.get(k) for r in runs}) > 1)


def loss_metrics(runs: Sequence, first: str | None = None) -> list[str]:
    """The loss metrics some of ``runs`` logged, ``first`` (the one they are ranked by) leading."""
    logged = {k for r in runs for k in r.data.metrics}
    names = [m for m in dict.fromkeys([*([first] if first else []), *LOSSES]) if m in logged]
    return names or ([first] if first else ["train_fixed/loss"])


def save_view(client, experiment_id: str, key: str, name: str, params: Iterable[str], metrics: Sequence[str],
              search_filter: str) -> str:
    """Write the saved view ``key`` of an experiment (params' columns first, then metrics', ranked by the first
    metric, lowest first); returns ``key``. An unchanged view is not rewritten."""
    columns = [column("params", p) for p in list(params)[:MAX_AXES]] + [column("metrics", m) for m in metrics]
    state = {"selectedColumns": columns, "columnOrder": columns, "searchFilter": search_filter,
             "orderByKey": column("metrics", metrics[0]) if metrics else "attributes.start_time",
             "orderByAsc": bool(metrics)}
    tag = TAG_PREFIX + key
    now = int(time.time() * 1000)
    try:
        old = json.loads(client.get_experiment(experiment_id).tags.get(tag) or "null") or {}
    except ValueError:
        old = {}
    if old.get("name") == name and old.get("state") == json.dumps(state):
        return key
    envelope = {"name": name, "createdAt": old.get("createdAt", now), "updatedAt": now, "state": json.dumps(state)}
    client.set_experiment_tag(experiment_id, tag, json.dumps(envelope))
    return key


def save_experiment_view(client, experiment_id: str) -> str:
    """The ``audiotrain`` view of an experiment, from the runs it holds now; returns its key."""
    runs = client.search_runs([experiment_id], TRAINING_RUNS)
    return save_view(client, experiment_id, EXPERIMENT_VIEW, "audiotrain: every training run",
                     swept_params(runs), loss_metrics(runs), TRAINING_RUNS)


def save_sweep_view(client, experiment_id: str, parent_run_id: str, name: str, axes: Iterable[str],
                    metric: str | None = None) -> str:
    """The view of one sweep's jobs: ``axes`` (``override.<key>`` params) and loss metrics, ``metric`` first."""
    search = f"tags.mlflow.parentRunId = '{parent_run_id}'"
    jobs = client.search_runs([experiment_id], search)
    return save_view(client, experiment_id, sweep_view_key(parent_run_id), f"{name}: its jobs",
                     list(dict.fromkeys(axes)), loss_metrics(jobs, metric), search)
