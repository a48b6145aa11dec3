"""``make bench-gpu``: the GPU measurements of ``tests/gpu/test_gpu_bench.py``, run and printed as a table.

Needs a CUDA GPU and a CUDA build of torch; without one it says so in one sentence and exits 0. Writes the results
as JSON (``--out``, default ``bench_gpu.json``) and prints them. Budget: under 8 minutes on one large GPU (the
released presets are built with random weights: nothing is downloaded).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench_gpu.json", help="the results, one JSON object per line (default %(default)s)")
    ap.add_argument("-k", default=None, help="run only the tests matching this pytest expression")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        build = "a CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, but no GPU is visible"
        print(f"make bench-gpu needs a CUDA GPU: this machine has none (torch {torch.__version__}, {build}); on a GPU "
              f"machine install a CUDA torch first (.venv/bin/pip install --force-reinstall --no-deps torch==2.13.0 "
              f"--index-url https://download.pytorch.org/whl/cu128), then run make bench-gpu again.")
        return 0
    out = Path(args.out).resolve()
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-s",
           str(ROOT / "tests" / "gpu")] + (["-k", args.k] if args.k else [])
    rc = subprocess.call(cmd, cwd=ROOT, env=dict(os.environ, AUDIOTRAIN_BENCH_GPU_OUT=str(out)))
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    device = rows[0]["device"] if rows else "?"
    print(f"\nGPU bench on {device} (results: {out})")
    for r in rows:
        if r["test"] == "lora":
            print(f"  {r['plugin']:9s} {r['preset']:10s} LoRA r=16 bf16, {r['clip_s']:g} s clip: "
                  f"{r['steps_per_s']:.2f} steps/s, peak {r['peak_gb']:.2f} GB")
        elif r["test"] == "acestep_original":
            print(f"  acestep original trainer.py set-up: {r['original_steps_per_s']:.2f} steps/s, peak "
                  f"{r['original_peak_gb']:.2f} GB -> audiotrain {r['speed_ratio']:.2f}x the speed, "
                  f"{r['memory_ratio']:.2f}x the memory")
        else:
            print(f"  {r['test']}: ok")
    return rc


if __name__ == "__main__":
    sys.exit(main())
