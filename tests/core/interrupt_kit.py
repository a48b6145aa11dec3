"""Fault injection for the interrupted-write tests.

A child process (``run_killed``) runs one of audiotrain's real writers, whose underlying write - ``torch.save``,
safetensors' ``save_file``, a text file's write, ``Dataset.save_to_disk`` - is replaced by one that writes half of
its bytes and then SIGKILLs the process: what a power cut or the OOM killer does in the middle of a save. The
parent then checks what a later run would find. Also a toy model + plugin for the adapter writer (a real LoRA
through PEFT and a native-format file, without building a system's backbone).
"""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]


def run_killed(code: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; it must end killed by SIGKILL (its fault injection fired)."""
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == -signal.SIGKILL, f"exit {p.returncode}, not killed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return p


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _write_half(f: Any, data: bytes) -> None:
    half = data[: len(data) // 2]
    if hasattr(f, "write"):
        f.write(half)
        f.flush()
    else:
        with open(f, "wb") as fh:
            fh.write(half)


def _name(f: Any) -> str:
    return str(getattr(f, "name", f))


def kill_in_torch_save(when: Callable[[str], bool] = lambda name: True) -> None:
    """``torch.save`` writes half of the file and kills the process (for the files ``when(name)`` picks)."""
    import torch

    real = torch.save

    def save(obj, f, *args, **kwargs):
        if not when(_name(f)):
            return real(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real(obj, buf)
        _write_half(f, buf.getvalue())
        die()

    torch.save = save


def kill_in_save_file(*modules: Any, when: Callable[[str], bool] = lambda name: True) -> None:
    """safetensors' ``save_file`` (and the copies ``modules`` imported) writes half and kills the process."""
    import safetensors.torch as st

    real = st.save_file

    def save_file(tensors, filename, metadata=None):
        if not when(str(filename)):
            return real(tensors, filename, metadata=metadata)
        _write_half(filename, st.save(tensors, metadata=metadata))
        die()

    st.save_file = save_file
    for m in modules:
        m.save_file = save_file


def kill_in_text_write(module: Any) -> None:
    """``open`` as ``module`` sees it: files opened for writing text write half and kill the process."""
    import builtins

    class Dying(io.StringIO):
        def __init__(self, path):
            super().__init__()
            self.path = path

        def write(self, text):
            with builtins.open(self.path, "w", encoding="utf-8") as fh:
                fh.write(text[: len(text) // 2])
            die()

    def fake_open(path, mode="r", *args, **kwargs):
        if "w" in mode and "b" not in mode:
            return Dying(path)
        return builtins.open(path, mode, *args, **kwargs)

    module.open = fake_open


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- a toy model for the adapter writer ------------------------------------------------------------------------

def toy_writer(value: float):
    """``model_setup.adapter_writer`` over a two-layer toy with a LoRA (r=2) on ``lin`` whose weights all equal
    ``value``, and a plugin with a native format (``toy/lora.safetensors``)."""
    from types import SimpleNamespace

    import torch
    from omegaconf import OmegaConf

    from audiotrain.lora.adapter import LoRASettings, attach
    from audiotrain.train.model_setup import BuiltModel, adapter_writer

    torch.manual_seed(0)
    root = torch.nn.Sequential()
    root.add_module("lin", torch.nn.Linear(8, 8))
    root.add_module("out", torch.nn.Linear(8, 2))
    settings = LoRASettings(r=2, alpha=4, target_modules=["lin"])
    attach(root, settings)
    with torch.no_grad():
        for n, p in root.named_parameters():
            if "lora_" in n:
                p.fill_(value)
    model = BuiltModel(SimpleNamespace(adapter_root=lambda: root), settings, 0, 0, 0, None)
    return adapter_writer(model, ToyPlugin(), OmegaConf.create({"model": {"preset": "tiny"}}))


TOY_FORMAT = None


def toy_format():
    global TOY_FORMAT
    if TOY_FORMAT is None:
        from audiotrain.lora.adapter import LoRASettings
        from audiotrain.lora.native_format import NativeFormat

        TOY_FORMAT = NativeFormat(filename="lora.safetensors", expected="a toy lora.safetensors",
                                  metadata_key="lora_config", encode=lambda s: s.to_json(),
                                  decode=LoRASettings.from_json)
    return TOY_FORMAT


class ToyPlugin:
    """What the adapter writer asks of a plugin — its name and native format — and the core's own
    ``Plugin.save_adapter_native`` that uses them."""
    name = "toy"

    def native_adapter_format(self):
        return toy_format()

    def save_adapter_native(self, root, settings, directory):
        from audiotrain.plugins.base import Plugin

        return Plugin.save_adapter_native(self, root, settings, directory)
