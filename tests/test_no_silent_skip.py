"""A skip always names its reason in the summary, and under AUDIOTRAIN_TESTS_NO_SKIP=1 (.ci/run) it is a failure:
CI provides what every test needs. Checked on a throwaway test file run by a real pytest with our conftest."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tests

REPO = Path(tests.__file__).resolve().parent.parent
CASES = '''import shutil
import pytest

@pytest.mark.skipif(shutil.which("no-such-tool-here") is None, reason="needs no-such-tool-here")
def test_marked():
    pass

def test_called():
    pytest.skip("needs the other thing")

def test_runs():
    assert 1 + 1 == 2
'''


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_cases.py").write_text(CASES)
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -ra\n")
    environ = {k: v for k, v in os.environ.items() if k != "AUDIOTRAIN_TESTS_NO_SKIP"}
    environ.update(env, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           "test_cases.py"], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120)


def test_a_skip_names_its_reason(tmp_path):
    p = _pytest(tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SKIPPED [1] test_cases.py:4: needs no-such-tool-here" in p.stdout
    assert "needs the other thing" in p.stdout and "1 passed, 2 skipped" in p.stdout


def test_under_no_skip_a_skip_fails_with_its_reason(tmp_path):
    p = _pytest(tmp_path, AUDIOTRAIN_TESTS_NO_SKIP="1")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "skipped (needs no-such-tool-here), but AUDIOTRAIN_TESTS_NO_SKIP=1" in p.stdout
    assert "skipped (needs the other thing), but AUDIOTRAIN_TESTS_NO_SKIP=1" in p.stdout
    assert "1 failed, 1 passed, 1 error" in p.stdout and "skipped" not in p.stdout.splitlines()[-1]
