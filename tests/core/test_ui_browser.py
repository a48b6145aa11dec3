"""The sweep in the MLflow UI, as a person sees it: `audiotrain ui` on loopback, opened in headless Chromium
(Debian's chromium + chromium-driver, driven by selenium; `.ci/run` installs them, nothing is downloaded).
The URLs audiotrain printed (by `audiotrain ui`, at the end of the sweep and of a job), opened in a fresh browser
profile, show the runs in model-training mode — the jobs with their losses and swept keys as columns, or the run's
own page — never the GenAI/traces view. The sweep's parent run also expands to its four child runs and the
`override.lora.r` column can be picked by hand. The server is stopped through the PID of `audiotrain ui`.
(The REST check runs without a browser too.)"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from tests.core.conftest import Sweep, cli_env

pytestmark = pytest.mark.slow  # the sweep4 fixture (~45 s), then the MLflow server and a browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {seconds:.0f} s")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Served:
    base: str
    port: int
    output: list[str] = field(default_factory=list)  # what `audiotrain ui` printed, line by line

    def printed_url(self, marker: str, seconds: float = 60) -> str:
        deadline = time.time() + seconds
        while time.time() < deadline:
            for line in list(self.output):
                if marker in line and "http://" in line:
                    return line[line.index("http://"):].split()[0]
            time.sleep(0.5)
        raise AssertionError(f"`audiotrain ui` printed no URL with {marker!r}: {self.output}")


@pytest.fixture(scope="module")
def ui_server(sweep4: Sweep):
    """`audiotrain ui --port P` in the sweep's working directory; stopped through its own PID at the end, and the
    port must be closed afterwards (no server left behind)."""
    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "audiotrain.cli.main", "ui", "--port", str(port)], cwd=sweep4.cwd,
                          env=cli_env(sweep4.cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    served = Served(f"http://127.0.0.1:{port}", port)
    reader = threading.Thread(target=lambda: served.output.extend(iter(ui.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        _wait_for(f"http://127.0.0.1:{port}/health", 120)
        yield served
    finally:
        ui.send_signal(signal.SIGTERM)  # `audiotrain ui`'s own PID: it stops the server it started
        ui.wait(timeout=60)
    assert not _port_open(port), "the MLflow server outlived `audiotrain ui`"


def test_ui_serves_the_sweep_over_the_rest_api(ui_server, sweep4: Sweep):
    req = urllib.request.Request(f"{ui_server.base}/api/2.0/mlflow/experiments/search", method="POST",
                                 data=json.dumps({"max_results": 10}).encode(),
                                 headers={"Content-Type": "application/json"})
    body = json.loads(urllib.request.urlopen(req, timeout=10).read())
    exp = next(e for e in body["experiments"] if e["name"] == "audiotrain/acestep")
    req = urllib.request.Request(f"{ui_server.base}/api/2.0/mlflow/runs/search", method="POST",
                                 data=json.dumps({"experiment_ids": [exp["experiment_id"]]}).encode(),
                                 headers={"Content-Type": "application/json"})
    runs = json.loads(urllib.request.urlopen(req, timeout=10).read())["runs"]
    assert len(runs) == 5
    assert "<html" in urllib.request.urlopen(f"{ui_server.base}/", timeout=10).read().decode().lower()


def _chromium(profile):
    """Headless Chromium on a profile of its own (a fresh one: no choice a person made before is remembered)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert not profile.exists()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1600,1000",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


needs_chromium = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                                    "(apt-get install chromium chromium-driver; .ci/run does)")


@needs_chromium
def test_sweep_children_and_override_column_in_headless_chromium(ui_server, sweep4: Sweep, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    client = sweep4.client()
    exp = client.get_experiment_by_name("audiotrain/acestep")
    children = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("mlflow.parentRunId")]
    parent_name = next(r.info.run_name for r in client.search_runs([exp.experiment_id])
                       if r.data.tags.get("audiotrain.sweep") == "parent")
    driver = _chromium(tmp_path / "profile")
    try:
        driver.implicitly_wait(10)
        driver.get(f"{ui_server.base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")
        body = lambda: driver.find_element(By.TAG_NAME, "body").text  # noqa: E731
        WebDriverWait(driver, 60).until(lambda d: parent_name in body())
        # expand the sweep's parent run: its child runs appear, named after their swept values
        name = driver.find_element(By.XPATH, f"//a[.//span[normalize-space()='{parent_name}']]")
        name.find_element(By.XPATH, "./ancestor::div[contains(@class,'ag-cell')][1]//button").click()
        WebDriverWait(driver, 30).until(lambda d: all(c.info.run_name in body() for c in children))
        # show the swept key as a column (Columns → override.lora.r), as a person comparing the jobs does
        driver.find_element(By.XPATH, "//button[normalize-space()='Columns']").click()
        driver.find_element(By.XPATH, "//*[normalize-space(text())='override.lora.r']").click()
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        driver.execute_script("document.querySelectorAll('.ag-body-horizontal-scroll-viewport, .ag-center-cols-viewport')"
                              ".forEach(e => e.scrollLeft = e.scrollWidth)")
        header = WebDriverWait(driver, 30).until(
            lambda d: [h for h in d.find_elements(By.CSS_SELECTOR, ".ag-header-cell") if "override.lora.r" in h.text])
        assert header[0].is_displayed()
        ranks = WebDriverWait(driver, 30).until(lambda d: [
            c.text for c in d.find_elements(By.CSS_SELECTOR, "[col-id='params.`override.lora.r`'].ag-cell")])
        assert sorted(r for r in ranks if r.strip() and r.strip() != "-") == ["4", "4", "8", "8"]
        shot = tmp_path / "mlflow_sweep.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        keep = os.environ.get("AUDIOTRAIN_SCREENSHOT_DIR")
        if keep:
            shutil.copy(shot, keep)
    finally:
        driver.quit()


def _printed(text: str, marker: str) -> str:
    """The URL on the line of ``text`` that holds ``marker`` (as a person copies it from the terminal)."""
    line = next(line for line in text.splitlines() if marker in line and "http://" in line)
    return line[line.index("http://"):].split()[0]


def _on(url: str, served: Served) -> str:
    """A URL printed for the default port (5000), on the port the test's `audiotrain ui` serves instead."""
    parts = urlsplit(url)
    assert parts.netloc == "127.0.0.1:5000", url  # what `audiotrain ui` (no --port) serves
    return parts._replace(netloc=f"127.0.0.1:{served.port}").geturl()


def _genai_view_shown(text: str) -> bool:
    return any(s in text for s in ("Detect Issues", "No data available", "Token Usage"))


def _runs_table(driver, want_rows: int):
    """{header: [cell texts]} of the runs table once it shows ``want_rows`` runs (columns scrolled into view)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def table(d):
        from selenium.common.exceptions import StaleElementReferenceException

        try:
            return _table(d)
        except StaleElementReferenceException:  # the grid re-rendered while it was read: read it again
            return None

    def _table(d):
        d.execute_script("document.querySelectorAll('.ag-body-horizontal-scroll-viewport, .ag-center-cols-viewport')"
                         ".forEach(e => e.scrollLeft = 0)")
        cols = {h.get_attribute("col-id"): h.text for h in d.find_elements(By.CSS_SELECTOR, ".ag-header-cell")}
        # a cell's last line is its value (the run name cell starts with the run's colour, "#5f7281")
        cells = lambda cid: d.find_elements(By.CSS_SELECTOR, f".ag-cell[col-id='{cid}']")  # noqa: E731
        out = {name: [(c.text.strip().splitlines() or [""])[-1] for c in cells(cid)]
               for cid, name in cols.items() if name}
        names = out.get("Run Name", [])
        return out if len([n for n in names if n.strip()]) == want_rows else None

    return WebDriverWait(driver, 60).until(table)


@needs_chromium
def test_the_printed_urls_open_the_runs_with_their_losses_and_swept_keys(ui_server, sweep4: Sweep, tmp_path):
    """`audiotrain ui`'s runs page, the sweep's "jobs side by side" and a job's own page, each opened as printed in a
    fresh profile: runs with their metrics and swept keys as columns (nobody picked them), model training, no traces."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    client = sweep4.client()
    parent = client.get_run((sweep4.sweep_dir / "mlflow_parent_run_id").read_text().strip())
    exp_id = parent.info.experiment_id
    children = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    jobs = {r.info.run_name: r for r in children}
    assert len(jobs) == 4
    printed = sweep4.runs[1].stdout + sweep4.runs[1].stderr  # the command that finished the sweep
    urls = {"ui": ui_server.printed_url("viewStateShareKey=audiotrain"),
            "sweep": _on(_printed(printed, "its jobs side by side:"), ui_server),
            "job": _on(_printed(printed, "in the UI:"), ui_server)}
    assert urls["ui"].startswith(f"{ui_server.base}/#/experiments/{exp_id}/runs?")
    assert "(start the UI first: audiotrain ui)" in printed
    keep = os.environ.get("AUDIOTRAIN_SCREENSHOT_DIR")
    for name in ("ui", "sweep"):
        driver = _chromium(tmp_path / f"profile_{name}")
        try:
            driver.get(urls[name])
            table = _runs_table(driver, 4)  # the four jobs, each a row (not folded under the sweep's parent run)
            body = driver.find_element(By.TAG_NAME, "body").text
            assert not _genai_view_shown(body) and "workflowType=machine_learning" in driver.current_url
            assert sorted(table["Run Name"]) == sorted(jobs)
            assert sorted(table["override.lora.r"]) == ["4", "4", "8", "8"]
            assert sorted(table["override.scheduler"]) == ["constant", "constant", "cosine_restarts", "cosine_restarts"]
            # the losses the jobs logged, best first (the table is ranked by train_fixed/loss)
            shown = [float(v) for v in table["train_fixed/loss"]]
            assert shown == sorted(shown) and len(shown) == 4
            logged = sorted(r.data.metrics["train_fixed/loss"] for r in jobs.values())
            assert all(abs(a - b) < 1e-6 for a, b in zip(shown, logged))
            assert all(float(v) > 0 for v in table["train/loss"])
            shot = tmp_path / f"mlflow_{name}.png"
            driver.save_screenshot(str(shot))
            if keep:
                shutil.copy(shot, keep)
        finally:
            driver.quit()
    job_id = urls["job"].split("/runs/")[1].split("?")[0]
    assert job_id in {r.info.run_id for r in jobs.values()}
    driver = _chromium(tmp_path / "profile_job")
    try:
        driver.get(urls["job"])
        name = next(n for n, r in jobs.items() if r.info.run_id == job_id)
        body = lambda: driver.find_element(By.TAG_NAME, "body").text  # noqa: E731
        WebDriverWait(driver, 60).until(lambda d: name in body() and "train_fixed/loss" in body())
        assert not _genai_view_shown(body())
    finally:
        driver.quit()


@needs_chromium
def test_a_new_browser_opens_any_experiment_page_on_its_runs_and_a_choice_made_is_kept(ui_server, sweep4: Sweep,
                                                                                       tmp_path):
    """The page `audiotrain ui` serves sets MLflow's model-training view (and "assistant already shown") for a browser
    that has not chosen: a bare experiment URL, typed or clicked with no workflowType, shows the runs. A person who
    picks GenAI keeps it."""
    from selenium.webdriver.common.by import By

    parent = sweep4.client().get_run((sweep4.sweep_dir / "mlflow_parent_run_id").read_text().strip())
    driver = _chromium(tmp_path / "profile_bare")
    try:
        driver.get(f"{ui_server.base}/")
        driver.get(f"{ui_server.base}/#/experiments/{parent.info.experiment_id}")
        table = _runs_table(driver, 1)  # the sweep's parent run (its jobs folded under it), in the runs table
        assert parent.info.run_name in table["Run Name"]
        assert not _genai_view_shown(driver.find_element(By.TAG_NAME, "body").text)
        stored = driver.execute_script("return [localStorage.getItem('mlflow.workflowType_v1'),"
                                       " localStorage.getItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1')]")
        assert stored == ['"machine_learning"', "true"]
        driver.execute_script("localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('genai'))")
        driver.get(f"{ui_server.base}/")
        assert driver.execute_script("return localStorage.getItem('mlflow.workflowType_v1')") == '"genai"'
    finally:
        driver.quit()
