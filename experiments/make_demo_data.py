"""Write the demo song folder (ACE-Step's seed format) used by `make demo`: twelve songs, of which the demo
holds a quarter out for validation (dataset.val_fraction=0.25 in its experiment preset)."""
import sys

from audiotrain_acestep.demo_songs import demo_specs, write_song_folder

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "demo_data/songs"
    paths = write_song_folder(out, demo_specs(12))
    print(f"Wrote {len(paths)} demo songs (mp3 + _prompt.txt + _lyrics.txt) to {out}")
