"""The sweep in the MLflow UI, as a person sees it: `audiotrain ui` on loopback, opened in headless Chromium
(Debian's chromium + chromium-driver, driven by selenium; `.ci/run` installs them, nothing is downloaded).
The sweep's parent run expands to its four child runs and the `override.lora.r` column shows each job's rank.
The server is stopped through the PID of `audiotrain ui`. (The REST check runs without a browser too.)"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

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


@pytest.fixture(scope="module")
def ui_server(sweep4: Sweep):
    """`audiotrain ui --port P` in the sweep's working directory; stopped through its own PID at the end, and the
    port must be closed afterwards (no server left behind)."""
    port = _free_port()
    ui = subprocess.Popen([sys.executable, "-m", "audiotrain.cli.main", "ui", "--port", str(port)], cwd=sweep4.cwd,
                          env=cli_env(sweep4.cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(f"http://127.0.0.1:{port}/health", 120)
        yield f"http://127.0.0.1:{port}"
    finally:
        ui.send_signal(signal.SIGTERM)  # `audiotrain ui`'s own PID: it stops the server it started
        ui.wait(timeout=60)
    assert not _port_open(port), "the MLflow server outlived `audiotrain ui`"


def test_ui_serves_the_sweep_over_the_rest_api(ui_server, sweep4: Sweep):
    req = urllib.request.Request(f"{ui_server}/api/2.0/mlflow/experiments/search", method="POST",
                                 data=json.dumps({"max_results": 10}).encode(),
                                 headers={"Content-Type": "application/json"})
    body = json.loads(urllib.request.urlopen(req, timeout=10).read())
    exp = next(e for e in body["experiments"] if e["name"] == "audiotrain/acestep")
    req = urllib.request.Request(f"{ui_server}/api/2.0/mlflow/runs/search", method="POST",
                                 data=json.dumps({"experiment_ids": [exp["experiment_id"]]}).encode(),
                                 headers={"Content-Type": "application/json"})
    runs = json.loads(urllib.request.urlopen(req, timeout=10).read())["runs"]
    assert len(runs) == 5
    assert "<html" in urllib.request.urlopen(f"{ui_server}/", timeout=10).read().decode().lower()


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; .ci/run does)")
def test_sweep_children_and_override_column_in_headless_chromium(ui_server, sweep4: Sweep, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    client = sweep4.client()
    exp = client.get_experiment_by_name("audiotrain/acestep")
    children = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("mlflow.parentRunId")]
    parent_name = next(r.info.run_name for r in client.search_runs([exp.experiment_id])
                       if r.data.tags.get("audiotrain.sweep") == "parent")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1600,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.implicitly_wait(10)
        driver.get(f"{ui_server}/#/experiments/{exp.experiment_id}/runs")
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
