"""VALL-E fixtures: real speech clips made with espeak-ng (two speakers) plus a broken clip."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

LINES = {
    "alice": ["The quick brown fox jumps over the lazy dog.", "She sells sea shells by the sea shore.",
              "A stitch in time saves nine."],
    "bob": ["Hello there, how are you today?", "It is a beautiful morning in the city.",
            "Please call me back tomorrow."],
}


@pytest.fixture(scope="session")
def voice_dir(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("voices")
    for spk, lines in LINES.items():
        (root / spk).mkdir()
        for i, text in enumerate(lines):
            voice = "en-us" if spk == "alice" else "en-gb"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(root / spk / f"clip{i}.wav"), text], check=True,
                           capture_output=True)
            (root / spk / f"clip{i}.txt").write_text(text)
    (root / "bob" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    (root / "bob" / "broken.txt").write_text("This clip is broken.")
    return root


@pytest.fixture
def valle_cfg(tmp_path, voice_dir):
    from tests.conftest import NO_SIGNAL_HANDLERS, compose

    def make(*extra: str, run: str = "run"):
        return compose([
            "model=valle", f"data={voice_dir}", "model.preset=tiny", "tracking=none", "dataset.num_workers=0",
            "trainer.accelerator=cpu", "trainer.every_plot_step=0", "trainer.progress_bar=false",
            "trainer.stdin_control=false", NO_SIGNAL_HANDLERS, f"cache_dir={tmp_path / 'cache'}",
            f"paths.log_dir={tmp_path / 'logs'}", f"paths.run_dir={tmp_path / 'logs' / run}", *extra,
        ])

    return make
