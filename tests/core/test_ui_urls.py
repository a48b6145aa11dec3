"""The MLflow UI addresses audiotrain prints (model-training mode, the run or the runs page) and the saved views they
open, on a real SQLite store; the end-of-run message's UI lines. The same URLs in a browser: test_ui_browser.py."""
from __future__ import annotations

import json
import os

from audiotrain.tracking.ui_urls import base_url, experiment_url, run_lines, run_url, ui_command
from audiotrain.tracking.ui_views import (EXPERIMENT_VIEW, TAG_PREFIX, save_experiment_view, save_sweep_view,
                                          sweep_view_key)


def test_urls_open_the_runs_in_model_training_mode():
    base = base_url()
    assert base == "http://127.0.0.1:5000"
    assert experiment_url(base, "3") == "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert experiment_url(base, "3", "sweep-ab") == \
        "http://127.0.0.1:5000/#/experiments/3/runs?viewStateShareKey=sweep-ab&workflowType=machine_learning"
    assert run_url(base_url(port=5123), "3", "f00") == \
        "http://127.0.0.1:5123/#/experiments/3/runs/f00?workflowType=machine_learning"
    assert base_url(host="0.0.0.0", port=8080) == "http://127.0.0.1:8080"  # what a browser on this machine opens
    # a tracking server serves its own UI; there is no command to run first
    assert base_url("http://mlflow:5000/") == "http://mlflow:5000"
    assert ui_command("http://mlflow:5000") is None


def test_the_printed_command_serves_the_store_on_the_port(tmp_path):
    here = f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert ui_command(here, cwd=tmp_path) == "audiotrain ui"
    assert ui_command(here, 5001, cwd=tmp_path) == "audiotrain ui --port 5001"
    assert ui_command("sqlite:////elsewhere/my runs.db", cwd=tmp_path) == \
        "audiotrain ui --uri 'sqlite:////elsewhere/my runs.db'"


def _store(tmp_path):
    from audiotrain.tracking.mlflow_store import Tracker

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "audiotrain/views")


def _run(t, name, params, metrics, tags=None):
    t.start(name, tags or {})
    t.log_params(params)
    t.log_metrics(metrics, step=6)
    t.finish()
    return t.run_id


def _view(client, exp_id, key):
    envelope = json.loads(client.get_experiment(exp_id).tags[TAG_PREFIX + key])
    assert isinstance(envelope["name"], str) and isinstance(envelope["createdAt"], int)
    return envelope["name"], json.loads(envelope["state"])  # the format MLflow 3.17's UI reads


def test_saved_views_list_the_training_runs_with_what_differs(tmp_path):
    t = _store(tmp_path)
    parent = _run(t, "sweep lora.r=4,8", {"sweep.overrides": "lora.r=4,8"}, {"best/train_fixed/loss": 0.5},
                  {"audiotrain.sweep": "parent"})
    jobs = [_run(t, f"lora.r={r}", {"override.lora.r": r, "override.data": "songs"},
                 {"train/loss": 1.0 / r, "train_fixed/loss": 2.0 / r}, {"mlflow.parentRunId": parent})
            for r in (4, 8)]
    single = _run(t, "single", {"override.data": "songs", "override.lora.dropout": "0.1"},
                  {"train/loss": 0.9, "val/loss": 0.8, "train_fixed/loss": 0.7})

    assert save_experiment_view(t.client, t.experiment_id) == EXPERIMENT_VIEW
    name, state = _view(t.client, t.experiment_id, EXPERIMENT_VIEW)
    # keys that differ between runs (absent counts) become columns; override.data, the same everywhere, does not
    assert state["selectedColumns"] == ["params.`override.lora.dropout`", "params.`override.lora.r`",
                                        "metrics.`val/loss`", "metrics.`train_fixed/loss`", "metrics.`train/loss`"]
    assert state["columnOrder"] == state["selectedColumns"]
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`val/loss`", True)
    listed = {r.info.run_id for r in t.client.search_runs([t.experiment_id], state["searchFilter"])}
    assert listed == {*jobs, single}  # the sweep parent is filtered out: its jobs are rows of their own

    key = save_sweep_view(t.client, t.experiment_id, parent, "sweep lora.r=4,8", ["override.lora.r"],
                          "train_fixed/loss")
    assert key == sweep_view_key(parent)
    name, state = _view(t.client, t.experiment_id, key)
    assert name == "sweep lora.r=4,8: its jobs"
    assert state["selectedColumns"] == ["params.`override.lora.r`", "metrics.`train_fixed/loss`",
                                        "metrics.`train/loss`"]
    assert {r.info.run_id for r in t.client.search_runs([t.experiment_id], state["searchFilter"])} == set(jobs)

    before = t.client.get_experiment(t.experiment_id).tags[TAG_PREFIX + key]
    save_sweep_view(t.client, t.experiment_id, parent, "sweep lora.r=4,8", ["override.lora.r"], "train_fixed/loss")
    assert t.client.get_experiment(t.experiment_id).tags[TAG_PREFIX + key] == before  # unchanged: not rewritten


def test_the_end_of_run_message_gives_the_run_page_and_the_command(tmp_path, monkeypatch):
    from audiotrain.cli.train_entry import done_message

    t = _store(tmp_path)
    run_id = _run(t, "one", {}, {"train/loss": 1.0})
    summary = {"steps": 6, "loss_start_mean": 0.9, "loss_end_mean": 0.4, "run_dir": "/r", "adapter_dir": "/r/a",
               "mlflow_run_id": run_id, "tracking_uri": t.uri}
    monkeypatch.chdir(tmp_path)  # where the store is: `audiotrain ui` alone serves it
    lines = done_message(summary).splitlines()
    assert f"  MLflow run:    {run_id} in {t.uri}" in lines
    assert (f"  in the UI:     http://127.0.0.1:5000/#/experiments/{t.experiment_id}/runs/{run_id}"
            "?workflowType=machine_learning") in lines
    assert "                 (start the UI first: audiotrain ui)" in lines
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert f"(start the UI first: audiotrain ui --uri {t.uri})" in done_message(summary)
    # a run on a tracking server: its own page there, nothing to start
    assert run_lines("http://mlflow:5000", "abc", "7") == \
        ["  in the UI:     http://mlflow:5000/#/experiments/7/runs/abc?workflowType=machine_learning"]


def test_the_served_page_sets_the_model_training_defaults_before_the_ui_script():
    from audiotrain.tracking.ui_app import DEFAULTS, with_defaults

    page = with_defaults('<!doctype html><html><head><meta charset="utf-8"/><script defer src="main.js"></script>'
                         '</head><body></body></html>')
    script = page[page.index("<head>") + 6:page.index("<meta")]
    assert script.startswith("<script>") and script.endswith("</script>")
    assert page.index(script) < page.index("main.js")  # before the UI reads its choices
    assert '"mlflow.workflowType_v1": "\\"machine_learning\\""' in script
    assert "getItem(k)===null" in script  # only where the browser holds no choice of its own
    assert DEFAULTS == {"mlflow.workflowType_v1": "machine_learning",
                        "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True}
