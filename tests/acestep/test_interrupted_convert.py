"""`audiotrain convert` killed (SIGKILL) in the middle of writing its HF dataset leaves the previous dataset whole,
which a later run reads as its data=; an output name that is someone else's folder is refused, not replaced."""
from __future__ import annotations

from audiotrain.atomic_write import is_temporary
from audiotrain.data.prepare import resolve_manifest
from audiotrain.data.report import BadInputReport
from audiotrain_acestep.convert import convert
from audiotrain_acestep.plugin import PLUGIN
from tests.core.interrupt_kit import run_killed, tree


def _rows(path) -> int:
    report = BadInputReport()
    manifest = resolve_manifest(str(path), PLUGIN, report)  # what training with data=PATH reads
    assert manifest.format.startswith("HF dataset") and not report.skipped
    return len(manifest)


def test_a_converter_killed_mid_write_leaves_the_previous_dataset(song_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert convert(["--data_dir", str(song_dir), "--output_name", "ds"]) == 0
    ds = tmp_path / "ds"
    before = tree(ds)
    run_killed(f"""
        from pathlib import Path
        import datasets
        from tests.core.interrupt_kit import die
        real = datasets.Dataset.save_to_disk
        def dying(self, path, *args, **kwargs):   # the arrow file cut in half, then killed
            real(self, path, *args, **kwargs)
            for arrow in Path(path).glob("*.arrow"):
                arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
            die()
        datasets.Dataset.save_to_disk = dying
        from audiotrain_acestep.convert import convert
        convert(["--data_dir", {str(song_dir)!r}, "--repeat_count", "3", "--output_name", "ds"])
    """, tmp_path)
    assert tree(ds) == before and _rows(ds) == 4
    (left,) = [p.name for p in tmp_path.iterdir() if p.name != "ds"]
    assert is_temporary(left) and left.startswith(".ds.tmp-")
    assert convert(["--data_dir", str(song_dir), "--repeat_count", "2", "--output_name", "ds"]) == 0
    assert _rows(ds) == 8 and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # replaced, leftover swept


def test_an_output_name_that_is_another_folder_is_refused_and_untouched(song_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "my_music"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert convert(["--data_dir", str(song_dir), "--output_name", "my_music"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"audiotrain convert: --output_name {mine.relative_to(tmp_path)} is a folder with other files "
                   f"in it, which this command would replace: give a new folder name.")
    assert tree(mine) == {"notes.txt": b"mine"} and sorted(p.name for p in tmp_path.iterdir()) == ["my_music"]
