"""What a dataset walk enters, and which files in it are plainly not data. Every folder reader walks with this.

``data=.`` in a project folder must find the songs, not the project: a walk below the data folder never enters
a hidden folder (``.git``, ``.venv``), a Python environment or package folder (one holding ``pyvenv.cfg`` or
``conda-meta/``; ``site-packages``, ``node_modules``, ``__pycache__``, ``*.egg-info``), audiotrain's own outputs
(``exps/``, ``outputs/``, ``multirun/``, MLflow's ``mlruns/``/``mlartifacts/``), a cache folder (tagged with
``CACHEDIR.TAG``, as the feature cache is wherever ``cache_dir`` puts it) or a run directory
(``run_dir.is_run_dir``). Such a folder is pruned before it is listed, so a large environment costs one look, and
outputs and run directories are named in one note line (the rest, never a user's data, in none). The data
folder itself is always walked, whatever it is: the user named it.

Files that are plainly not part of a dataset (cover art, notes and documents, playlists, rip logs, Thumbs.db,
README*/LICENSE*) are passed over without a word; everything else is the reader's to use or report.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from audiotrain.data.audio_io import AUDIO_EXTENSIONS, OTHER_AUDIO_EXTENSIONS
from audiotrain.train.run_dir import is_run_dir

PACKAGE_FOLDERS = frozenset({"site-packages", "dist-packages", "node_modules", "__pycache__"})
PACKAGE_SUFFIXES = (".egg-info", ".dist-info")  # an installed or built package's metadata
ENVIRONMENT_MARKERS = ("pyvenv.cfg", "conda-meta")  # a virtualenv / venv, a conda environment
OUTPUT_FOLDERS = frozenset({"exps", "outputs", "multirun", "mlruns", "mlartifacts"})

# The Cache Directory Tagging Specification (bford.info/cachedir): a file CACHEDIR.TAG whose first bytes are this
# signature marks its folder as a cache (backup tools skip it too).
CACHE_TAG = "CACHEDIR.TAG"
CACHE_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"

NOT_DATA_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ico", ".svg", ".heic",  # cover art
    ".md", ".rst", ".pdf", ".nfo", ".log", ".cue", ".m3u", ".m3u8", ".pls", ".db", ".sfv", ".accurip",
    ".html", ".htm", ".url", ".doc", ".docx", ".rtf"})
NOT_DATA_NAMES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "notes.txt", "todo.txt", "info.txt",
                            "requirements.txt", "cmakelists.txt"})
NOT_DATA_PREFIXES = ("readme", "license", "licence", "copying", "changelog", "authors", "credits")
AUDIO_LIKE = frozenset(AUDIO_EXTENSIONS) | frozenset(OTHER_AUDIO_EXTENSIONS)


#: folders not entered that are named in the note line: recognised by name or by a file audiotrain writes, so a
#: user's own folder could be one (hidden folders, environments, package folders and tagged caches never are)
TOLD = ("audiotrain's outputs", "a run directory")


def tag_cache(folder: Path) -> None:
    """Mark ``folder`` as a cache (``CACHEDIR.TAG``) so that no dataset walk (nor a backup) goes through it."""
    tag = folder / CACHE_TAG
    if not tag.is_file():
        try:
            tag.write_bytes(CACHE_SIGNATURE + b"\n# This folder is audiotrain's feature cache: it can be deleted and "
                                              b"is rebuilt when needed.\n# See https://bford.info/cachedir/\n")
        except OSError:  # a read-only cache works without its tag (the default .audiotrain_cache is hidden anyway)
            pass


def is_cache(folder: Path) -> bool:
    try:
        with open(folder / CACHE_TAG, "rb") as fh:
            return fh.read(len(CACHE_SIGNATURE)) == CACHE_SIGNATURE
    except OSError:
        return False


def not_entered(folder: Path) -> str | None:
    """Why a dataset walk does not enter ``folder`` (a folder below the data folder), or None when it does."""
    name = folder.name
    if name.startswith("."):
        return "hidden"
    if name in PACKAGE_FOLDERS or name.endswith(PACKAGE_SUFFIXES) \
            or any(os.path.exists(folder / m) for m in ENVIRONMENT_MARKERS):  # os.path: never raises
        return "a Python environment or package folder"
    if name in OUTPUT_FOLDERS:
        return "audiotrain's outputs"
    if is_cache(folder):
        return "a cache (CACHEDIR.TAG)"
    if is_run_dir(folder):
        return "a run directory"
    return None


def not_data(name: str) -> bool:
    """Whether a file of this name is plainly not part of a dataset (cover.jpg, notes.md, README.txt, Thumbs.db)."""
    low = name.lower()
    ext = os.path.splitext(low)[1]
    if ext in AUDIO_LIKE:
        return False
    return ext in NOT_DATA_EXTENSIONS or low in NOT_DATA_NAMES or low.startswith(NOT_DATA_PREFIXES)


def walk_files(root: Path, passed: list[tuple[Path, str]] | None = None) -> Iterator[Path]:
    """The files a reader looks at below ``root``, folder by folder: none in a folder :func:`not_entered` names,
    none hidden or :func:`not_data`. Links that lead to no file (dangling, a loop) and special files (a named
    pipe) are among them, so they are reported rather than missed; links to folders are not followed.
    ``passed`` collects ``(folder, why)`` for every folder not entered for a reason in :data:`TOLD`."""
    for top, dirs, files in os.walk(root):
        here = Path(top)
        kept = []
        for d in sorted(dirs):
            why = not_entered(here / d)
            if why is None:
                kept.append(d)
            elif passed is not None and why in TOLD:
                passed.append((here / d, why))
        dirs[:] = kept
        for name in sorted(files):
            if not name.startswith(".") and not not_data(name):
                yield here / name


def dataset_files(root: Path, passed: list[tuple[Path, str]] | None = None) -> list[Path]:
    """:func:`walk_files`, sorted as paths are (a folder's files and sub-folders by name)."""
    return sorted(walk_files(root, passed))


def passed_note(root: Path, passed: list[tuple[Path, str]]) -> str | None:
    """One line naming the folders a walk below ``root`` did not enter as outputs or run directories, so data in a
    folder named like an output is never lost without a word: ``not searched: exps/ (audiotrain's outputs), ...``."""
    if not passed:
        return None
    shown = [f"{f.relative_to(root).as_posix()}/ ({why})" for f, why in passed[:5]]
    more = f" and {len(passed) - 5} more" if len(passed) > 5 else ""
    return (f"not searched: {', '.join(shown)}{more}; to use audio in one of them, name that folder in data= "
            f"(or move it)")
