"""The ACE-Step (v1 and 1.5) LoRA rows of ``make bench-memory`` against the memory people report for training ACE-Step LoRAs
with other tools (issue 18; the figures and their set-ups as /work/shared/specs/acestep*.md records them). Their
figures are GPU memory (CUDA context and the caching allocator's slack included, typically 0.3-1 GB more than the
tensors); ours are the CPU heap's high-water mark of the same step, so the comparison is of the step's own bytes.
None of the three sources states the clip length its figure was measured at (the fork trains whole songs under
360 s), so audiotrain's step is given at 60 s and at 240 s (``dataset.max_duration``'s default: the longest clip
it trains), at the same r=16. ACE-Step 1.5's rows (LoRA r=64) are compared likewise with the 7 GB (Side-Step) and
17 GB (the built-in trainer's tutorial) its users report (/work/shared/specs/acestep15.md §7)."""
from __future__ import annotations

from typing import Any

GB = 1e9

#: (who, what their figure covers, GB)
REPORTED = (
    ("a v1 fork with precomputed features", "ACE-Step v1, bf16 weights, gradient checkpointing, LoRA r=64, songs "
     "< 360 s, RTX 3080", 10.0),
    ("a 1.5 trainer with gradient checkpointing", "Side-Step's baseline before optimizer state (ACE-Step 1.5's 2B "
     "model)", 7.0),
    ("a general trainer with int8 weights", "int8 base weights, LoRA", 12.0),
)
#: audiotrain's rows compared, with the clip length each is at
OURS = (("lora", "60 s"), ("lora_240s", "240 s"), ("qlora_nf4", "60 s"), ("qlora_int8", "60 s"))


def reported_lines(rows: dict[str, Any]) -> list[str]:
    """The markdown section (empty when no compared row was measured)."""
    ours = [(row, clip, rows[row]["value"]["step_peak_gb"]) for row, clip in OURS
            if rows.get(row, {}).get("value")]
    if not ours:
        return []
    head = " | ".join(f"{'default' if row.startswith('lora') else row.split('_')[1]} r=16 @ {clip}: "
                      f"{gb:.2f} GB" for row, clip, gb in ours)
    lines = ["", "### ACE-Step v1 LoRA r=16 against what people report", "",
             "Reported figures are GPU memory of other tools (their set-ups as reported); audiotrain's are the step "
             "peaks above (CPU heap, the same step's bytes; a GPU adds its CUDA context and allocator slack, "
             "~0.3-1 GB). The sources give no clip length (the fork trains whole songs under 360 s), so audiotrain "
             "is shown at 60 s and at 240 s, the longest clip it trains by default. Each cell: audiotrain's GB less "
             "than reported (its ratio).", "",
             f"| reported | set-up | GB | {head} |",
             "|---|---|---:|" + "---:|" * len(ours)]
    for who, what, gb in REPORTED:
        cells = " | ".join(f"{gb - x:.2f} GB less ({x / gb:.2f}x)" if x < gb else f"{x - gb:.2f} GB more ({x / gb:.2f}x)"
                           for _, _, x in ours)
        lines.append(f"| {who} | {what} | {gb:.0f} | {cells} |")
    worst = max(x for _, _, x in ours)
    lines += ["", f"Every compared audiotrain set-up needs less than each reported figure: "
              f"{'yes' if worst < min(g for _, _, g in REPORTED) else 'no'} (largest {worst:.2f} GB against the "
              f"smallest reported {min(g for _, _, g in REPORTED):.0f} GB)."]
    return lines


#: ACE-Step 1.5 LoRA training memory people report (spec acestep15.md §7): (who, what their figure covers, GB)
REPORTED_15 = (
    ("Side-Step, gradient checkpointing", "ACE-Step 1.5 2B LoRA: its baseline with gradient checkpointing, before "
     "optimizer state", 7.0),
    ("the built-in trainer (LoRA tutorial)", "ACE-Step 1.5 2B LoRA r=64: 'typically ~17 GB' while training, 16 GB "
     "minimum", 17.0),
)
#: audiotrain's ACE-Step 1.5 rows compared, with the song length and checkpointing of each
OURS_15 = (("lora", "60 s, ckpt"), ("lora_240s", "240 s, ckpt"), ("lora_nockpt", "60 s, no ckpt"))


def acestep15_lines(system: str, rows: dict[str, Any]) -> list[str]:
    """The markdown section for an ACE-Step 1.5 system (empty when no compared row was measured)."""
    ours = [(clip, rows[row]["value"]["step_peak_gb"]) for row, clip in OURS_15 if rows.get(row, {}).get("value")]
    if not ours:
        return []
    xl = system.endswith("_xl")
    lines = ["", f"### ACE-Step 1.5 {'XL (4B)' if xl else '2B'} LoRA r=64 against what people report", "",
             "Reported figures are GPU memory of the trainers people use (their set-ups as reported; neither states "
             "a song length: the built-in trainer takes whole songs up to 240 s); audiotrain's are the step peaks "
             "above (CPU heap, the same step's bytes; a GPU adds its CUDA context and allocator slack, ~0.3-1 GB)."
             + (" The figures are for the 2B: none is published for training the XL." if xl else "")
             + " Each cell: audiotrain's GB less than reported (its ratio).", "",
             "| reported | set-up | GB | " + " | ".join(f"r=64 @ {clip}: {gb:.2f} GB" for clip, gb in ours) + " |",
             "|---|---|---:|" + "---:|" * len(ours)]
    for who, what, gb in REPORTED_15:
        cells = " | ".join(f"{gb - x:.2f} GB less ({x / gb:.2f}x)" if x < gb else f"{x - gb:.2f} GB more ({x / gb:.2f}x)"
                           for _, x in ours)
        lines.append(f"| {who} | {what} | {gb:.0f} | {cells} |")
    low = min(g for _, _, g in REPORTED_15)
    ckpt = [x for clip, x in ours if "no ckpt" not in clip]
    high = max(g for _, _, g in REPORTED_15)
    if ckpt and not xl:
        lines += ["", f"audiotrain's checkpointed LoRA step below the lowest reported figure ({low:.0f} GB) at every "
                  f"song length measured: {'yes' if max(ckpt) < low else 'no'} (largest {max(ckpt):.2f} GB)."]
    elif ckpt:
        weights = rows.get("lora", {}).get("value", {}).get("param_bytes", 0) / GB
        lines += ["", f"The XL's weights alone are {weights:.2f} GB (bf16 base, fp32 LoRA), so the 2B's {low:.0f} GB "
                  f"baseline is no bound for it; against the built-in trainer's {high:.0f} GB, audiotrain's checkpointed XL step is "
                  f"below at every song length measured: {'yes' if max(ckpt) < high else 'no'} (largest "
                  f"{max(ckpt):.2f} GB)."]
    return lines
