"""The repository's small things a newcomer meets first: helper scripts answer --help with help (and write
nothing), and what a demo or a run leaves behind is ignored by git."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "experiments").glob("*.py") if "__main__" in p.read_text())


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_help_is_help_and_writes_nothing(script: Path, tmp_path: Path):
    out = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:"), out.stdout[:300]
    assert list(tmp_path.iterdir()) == []  # no folder named "--help", no output of a real run


def test_demo_script_writes_the_songs_it_says(tmp_path: Path):
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "make_demo_data.py"), "songs", "--count", "2"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "songs").iterdir()) == [
        "demo_song_01.mp3", "demo_song_01_lyrics.txt", "demo_song_01_prompt.txt",
        "demo_song_02.mp3", "demo_song_02_lyrics.txt", "demo_song_02_prompt.txt"]
    bad = subprocess.run([sys.executable, str(ROOT / "experiments" / "make_demo_data.py"), "--count", "0"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--count 0: give at least 1 song" in bad.stderr


LEFT_BEHIND = ["exps/logs/x/config.yaml", "mlflow.db", "mlartifacts/1/a/artifacts/x.wav", "demo_data/songs/a.mp3",
               "outputs/2026-12-04/x.log", "multirun/2026-12-04/0/x.log", ".audiotrain_cache/features/x.pt",
               ".venv/bin/python"]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs git and a git checkout of the repository (CI runs a fresh clone)")
def test_what_runs_leave_behind_is_ignored_by_git():
    out = subprocess.run(["git", "check-ignore", "--no-index", "-v", *LEFT_BEHIND], cwd=ROOT, capture_output=True,
                         text=True)
    ignored = {line.split("\t", 1)[1] for line in out.stdout.splitlines()}
    assert ignored == set(LEFT_BEHIND), f"not ignored: {sorted(set(LEFT_BEHIND) - ignored)}"


def test_gpu_bench_without_a_gpu_is_one_sentence_and_exit_0(tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: make bench-gpu runs the real thing there")
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench_gpu.py")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("make bench-gpu needs a CUDA GPU: this machine has none") and out.stdout.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


BENCH = ROOT / "experiments" / "bench.py"
#: minimal sizes of the per-plugin bench parts (issue 18 points 3 and 4): a step of each in well under a second
MINIMAL = {
    "cache-valle": ["--plugin-clips", "4", "--cache-rounds", "1", "--cache-warmup", "1", "--cache-steps", "2"],
    "cache-tortoise": ["--plugin-clips", "4", "--cache-rounds", "1", "--cache-warmup", "1", "--cache-steps", "2"],
    "cache-songgen": ["--plugin-clips", "2", "--seconds", "4", "--cache-rounds", "1", "--cache-warmup", "1",
                      "--cache-steps", "2"],
    "xcodec-batch": ["--xcodec-scale", "16", "--xcodec-seconds", "1", "--xcodec-clips", "8", "--xcodec-rounds", "1"],
    "bucketing": ["--bucket-steps", "1", "--bucket-batch", "2", "--scale", "32"],
    "overhead": ["--tiny-seconds", "2", "--rounds", "1", "--overhead-warmup", "1", "--overhead-steps", "3"],
}
RATIO = r"(\d+\.\d+)x"


def _bench(part: str, tmp_path: Path) -> str:
    out = subprocess.run([sys.executable, str(BENCH), "--only", part, *MINIMAL[part]], cwd=tmp_path,
                         capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []  # everything in a temporary folder, removed
    return " ".join(out.stdout.split())  # rich wraps long lines: one line, single spaces


def _verdict_matches(text: str, pattern: str, ok) -> list[float]:
    """Every ``pattern`` match (groups: verdict, ratio) has the verdict its ratio deserves; returns the ratios."""
    import re

    found = re.findall(pattern, text)
    assert found, f"{pattern!r} not in the output: {text[-2000:]}"
    for verdict, value in found:
        assert (verdict == "met") == ok(float(value)), (verdict, value)
    return [float(v) for _, v in found]


@pytest.mark.slow
@pytest.mark.parametrize("part", ["cache-valle", "cache-tortoise", "cache-songgen"])
def test_bench_plugin_cache_part_prints_its_ratios_and_targets(part: str, tmp_path: Path):
    import re

    text = _bench(part, tmp_path)
    speed = _verdict_matches(text, r"speed >= 1\.5x: (met|not met) \(" + RATIO + r"\)", lambda r: r >= 1.5)
    memory = _verdict_matches(text, r"peak memory <= 0\.6x: (met|not met) \(" + RATIO, lambda r: r <= 0.6)
    assert len(speed) == len(memory) == 1 and 0 < speed[0] < 100 and 0 < memory[0] < 2
    assert re.search(r"release widths / 16 \(depths kept\): trainable \d+\.\d+ M; frozen: ", text)
    assert re.search(r"part run time \d+ s", text)
    assert "the cached run built a frozen encoder" not in text  # the cache replaced every frozen encoder
    for target, ok in (("speed", speed[0] >= 1.5), ("memory", memory[0] <= 0.6)):
        assert (f"cause ({target}):" in text) == (not ok)  # a missed target says its measured cause


@pytest.mark.slow
def test_bench_overhead_part_interleaves_audiotrain_and_bare_lightning_with_the_hand_loop(tmp_path: Path):
    import re

    text = _bench("overhead", tmp_path)
    for side in ("audiotrain", "bare Lightning"):
        found = re.findall(r"2 s clips, round 1/1: " + side + r" +(\d+\.\d+) steps/s, hand loop +(\d+\.\d+) "
                           r"steps/s, ratio (\d+\.\d+)", text)
        assert len(found) == 1, text[-2000:]
        mine, hand, ratio = map(float, found[0])
        assert mine > 0 and hand > 0 and abs(mine / hand - ratio) < 0.002, found


@pytest.mark.slow
def test_bench_xcodec_batch_part_prints_its_ratio(tmp_path: Path):
    import re

    text = _bench("xcodec-batch", tmp_path)
    found = re.findall(r"(\d+\.\d+) / (\d+\.\d+) clips/s = " + RATIO + r" \(target >= 3x: (met|not met);", text)
    assert len(found) == 1, text[-2000:]
    batched, alone, ratio, verdict = found[0]
    assert abs(float(batched) / float(alone) - float(ratio)) < 0.01 + 0.01 * float(ratio)
    assert (verdict == "met") == (float(ratio) >= 3)
    assert (re.search(r"cause: on this CPU a clip costs \d+ ms alone", text) is not None) == (float(ratio) < 3)
    assert "codes identical to one at a time: yes" in text
    assert re.search(r"part run time \d+ s", text)


@pytest.mark.slow
def test_bench_bucketing_part_prints_steps_per_s_of_both_orders(tmp_path: Path):
    import re

    text = _bench("bucketing", tmp_path)
    rows = re.findall(r"(valle|songgen|tortoise) batch +2, \d+ clips \(\d+ s\): duration buckets (\d+\.\d+) steps/s "
                      r"\(padding (\d+\.\d+)\), random order (\d+\.\d+) steps/s \(padding (\d+\.\d+)\): " + RATIO, text)
    assert [r[0] for r in rows] == ["valle", "songgen", "tortoise"]
    for _, bucketed, pad_b, rand, pad_r, ratio in rows:
        assert float(pad_b) >= 1.0 and float(pad_r) >= 1.0
        assert abs(float(bucketed) / float(rand) - float(ratio)) < 0.01 + 0.01 * float(ratio)


# ---------------------------------------------------------------------------------------------
# make bench-memory (experiments/bench_memory*.py): fast checks of its parts, no release-size measurement
# ---------------------------------------------------------------------------------------------
BENCH_MEMORY = ROOT / "experiments" / "bench_memory.py"


def _bench_memory_module(name: str):
    if str(ROOT / "experiments") not in sys.path:  # the parts import each other by name, as the script does
        sys.path.insert(0, str(ROOT / "experiments"))
    return __import__(name)


def _measurement(plugin: str, row: str, depth: int, step_gb: float, **extra) -> dict:
    """One measurement as a child reports it (the numbers a test chooses: the table's arithmetic is under test)."""
    return {"plugin": plugin, "row": row, "depth": depth, "threads": 1, "heap_peak_gb": step_gb + 0.5,
            "heap_build_gb": 0.5 * depth, "heap_encode_gb": 0.01, "heap_step_gb": step_gb, "heap_built_gb": 0.4,
            "rss_peak_gb": step_gb, "param_bytes": int(1e9) * depth, "params": 5 * 10**8 * depth,
            "trainable": 1_835_008 * depth, "trainable_bytes": 4 * 1_835_008 * depth,
            "grad_bytes": 4 * 1_835_008 * depth, "state_bytes": 8 * 1_835_008 * depth, "build_s": 1.0,
            "encode_s": 0.0, "step_s": 2.0, **extra}


def test_bench_memory_renders_extrapolated_acestep15_rows_and_the_comparison(tmp_path: Path):
    results = [_measurement("acestep15", "lora", 2, 1.0), _measurement("acestep15", "lora", 4, 1.5),
               _measurement("acestep15", "lora_nockpt", 2, 2.0), _measurement("acestep15", "lora_nockpt", 4, 3.0)]
    saved = tmp_path / "m.json"
    saved.write_text(__import__("json").dumps({"results": results, "elapsed_s": 60.0, "load_before": "1.00",
                                               "load_after": "2.00", "note": ""}))
    out = subprocess.run([sys.executable, str(BENCH_MEMORY), "--from-json", str(saved), "--out",
                          str(tmp_path / "memory.md")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    md = (tmp_path / "memory.md").read_text()
    assert "## acestep15 `base` (24 blocks) - clip 60 s" in md
    # 1.0 + (24 - 2) * (1.5 - 1.0) / 2 = 6.50 GB; 2.0 + 22 * 0.5 = 13.00 GB; 1,835,008 * 24 = 44.0 M trainable
    assert "| LoRA r=64 a=128, bf16, defaults (ckpt on, cached conditions, frozen base in bf16) | 6.50 | n/a |" in md
    assert "| LoRA r=64 a=128, bf16, no gradient checkpointing | 13.00 | n/a |" in md
    assert "| 44.0 M |" in md and "extrapolated from depths 2,4 (d2: 1.00, d4: 1.50)" in md
    assert "| Side-Step, gradient checkpointing |" in md
    assert "| 7 | 0.50 GB less (0.93x) | 6.00 GB more (1.86x) |" in md  # 6.50 and 13.00 GB against 7 GB
    assert "| 17 | 10.50 GB less (0.38x) | 4.00 GB less (0.76x) |" in md
    assert "below the lowest reported figure (7 GB) at every song length measured: yes (largest 6.50 GB)" in md
    assert "## valle" not in md and "## Targets" not in md  # only the systems measured, none with a target


def test_bench_memory_acestep15_lora_has_the_spec_trainable_count_per_layer():
    """One decoder layer at release width: 688,128·r / 24 (2B) and 1,310,720·r / 32 (XL) LoRA parameters, the
    frozen matrices held in bf16, the parts a cached step never reads left on the meta device (the bench's own
    assertion checks the same at every depth it measures)."""
    import torch

    a15 = _bench_memory_module("bench_memory_acestep15")
    for system, per_layer in (("acestep15", 28_672), ("acestep15_xl", 40_960)):
        model, released = a15.build(system, 1, checkpointing=True, random_init=False)  # fast: no init
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert trainable == per_layer * 64 == a15.TRAINABLE_PER_R[system] * 64 // (24 if system == "acestep15" else 32)
        assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
        assert model.decoder.layers[0].mlp.gate_proj.weight.dtype == torch.bfloat16
        assert model.decoder.gradient_checkpointing is True
        assert released == sum(p.numel() for p in model.encoder.parameters()) + sum(
            p.numel() for p in model.tokenizer.parameters()) + sum(p.numel() for p in model.detokenizer.parameters())
        assert released > 0 and all(p.device.type == "meta" for p in model.encoder.parameters())
    b = a15.batch(60.0, 2048, torch.Generator().manual_seed(0))
    assert [tuple(b[k].shape) for k in ("target_latents", "encoder_hidden_states", "context_latents")] == [
        (1, 1500, 64), (1, 769, 2048), (1, 1500, 128)]


def test_bench_memory_refuses_an_unknown_row_in_one_sentence(tmp_path: Path):
    out = subprocess.run([sys.executable, str(BENCH_MEMORY), "--rows", "lora,lora_fast"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("bench_memory: --rows takes lora, lora_nockpt,")
    assert list(tmp_path.iterdir()) == []
