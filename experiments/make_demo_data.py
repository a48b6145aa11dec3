"""Write the demo song folder (ACE-Step's seed format) used by `make demo`: synthesised songs (X.mp3, X_prompt.txt,
X_lyrics.txt), of which the demo holds a quarter out for validation (dataset.val_fraction=0.25 in its preset)."""
import argparse
import sys
from pathlib import Path

from audiotrain_acestep.demo_songs import demo_specs, write_song_folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make_demo_data.py", description=__doc__)
    ap.add_argument("folder", nargs="?", default="demo_data/songs", help="where to write them (default: %(default)s)")
    ap.add_argument("--count", type=int, default=12, help="how many songs (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.count < 1:
        ap.error(f"--count {args.count}: give at least 1 song")
    out = Path(args.folder)
    if out.exists() and not out.is_dir():
        ap.error(f"{out} is a file, not a folder: give another folder to write the songs into")
    paths = write_song_folder(out, demo_specs(args.count))
    print(f"Wrote {len(paths)} demo songs (mp3 + _prompt.txt + _lyrics.txt) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
