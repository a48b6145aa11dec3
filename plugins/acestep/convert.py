"""``audiotrain convert``: a raw song folder → ACE-Step's HF dataset (the seed's convert2hf_dataset)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audiotrain.atomic_write import atomic_dir
from audiotrain.data.report import BadInputReport
from audiotrain.errors import UserError

from audiotrain_acestep.readers import RawSongFolder


def rows_for_dataset(data_dir: Path, report: BadInputReport) -> list[dict]:
    manifest = RawSongFolder().read(data_dir, report)
    return [{"keys": r["key"], "filename": r["audio_path"], "tags": r["tags"], "speaker_emb_path": "",
             "norm_lyrics": r["lyrics"], "recaption": {}} for r in manifest.rows]


def convert(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="audiotrain convert",
                                 description="Convert a folder of X.mp3 + X_prompt.txt + X_lyrics.txt to an HF dataset.")
    ap.add_argument("--data_dir", default="./data")
    ap.add_argument("--repeat_count", type=int, default=1, help="rows are repeated N times (epoch inflation)")
    ap.add_argument("--output_name", default="zh_lora_dataset")
    args = ap.parse_args(argv)
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        print(f"audiotrain convert: --data_dir {args.data_dir} is not a folder: give the folder with your songs.", file=sys.stderr)
        return 2
    if args.repeat_count < 1:
        print(f"audiotrain convert: --repeat_count {args.repeat_count} must be at least 1.", file=sys.stderr)
        return 2
    report = BadInputReport(source=str(data_dir.resolve()))
    rows = rows_for_dataset(data_dir, report)
    report.usable = len(rows)
    print(report.render())
    if not rows:
        print(f"audiotrain convert: no usable songs in {data_dir}; nothing written.", file=sys.stderr)
        return 2
    from datasets import Dataset, Features, List, Value

    features = Features({"keys": Value("string"), "filename": Value("string"), "tags": List(Value("string")),
                         "speaker_emb_path": Value("string"), "norm_lyrics": Value("string"), "recaption": {}})
    ds = Dataset.from_list(rows * args.repeat_count, features=features)
    try:  # the dataset folder appears complete or not at all; an earlier one of that name is replaced
        with atomic_dir(Path(args.output_name), fix="free some space or give --output_name on another disk",
                        option="--output_name") as tmp:
            ds.save_to_disk(str(tmp))
    except UserError as exc:
        print(f"audiotrain convert: {exc}", file=sys.stderr)
        return 2
    print(f"Wrote {len(ds)} rows ({len(rows)} songs × {args.repeat_count}) to {args.output_name}")
    return 0
