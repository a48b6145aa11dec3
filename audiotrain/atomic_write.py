"""Files and folders that readers never see half-written, and a full disk said in one sentence.

A writer writes to a temporary name beside its target, ``.<name>.tmp-<host>-<pid>-<token>``, flushes it to the
disk and renames it into place once complete (atomic on one filesystem, for threads and processes alike). A
folder that replaces an existing one is swapped in by one atomic exchange (Linux ``renameat2``); where that is
missing, the old folder is renamed aside (``.<name>.old-...``), the new one in, and the old one removed: a crash
between those two renames leaves the old folder under its aside name, which :func:`recover` (run by every writer
and by the readers of run folders) renames back. So a process killed at any moment leaves the previous complete
file or folder under the real name, never a partial one.

Temporary names start with a dot and hold ``.tmp-`` / ``.old-`` (:func:`is_temporary`): no reader's pattern
(``last.ckpt``, ``step=*.ckpt``, ``adapters/final``, ``<entry>.safetensors``) matches them, and the next writer in
the same folder removes the ones whose process is gone.

A write that fails because the disk is full (ENOSPC, EDQUOT) raises :class:`DiskFullError`: which file, the free
space, what is kept and what to do.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Union

from audiotrain.errors import UserError

TMP, OLD = ".tmp-", ".old-"
_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname() or "host")
_LEFTOVER = re.compile(r"^\.(?P<name>.+)(?P<kind>\.tmp-|\.old-)(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]{8}$")
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# the same errors as texts: safetensors (Rust) and torch (C++) writers report them as RuntimeError-like messages
_FULL_TEXT = re.compile(r"No space left on device|Disk quota exceeded|os error (28|122)\b")
_swept: set[Path] = set()


class DiskFullError(UserError):
    """A save failed because its filesystem is full; the previous file is kept."""


def is_temporary(name: str) -> bool:
    """A name this module writes to before a rename (or keeps an old folder under): never a result to read."""
    return bool(_LEFTOVER.match(name))


def temp_name(target: Path, kind: str = TMP) -> Path:
    return target.with_name(f".{target.name}{kind}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def recover(target: str | Path) -> bool:
    """Put back a folder (or file) a killed writer left renamed aside: ``target`` missing and a
    ``.<name>.old-...`` of a process that is gone present. True if it did. With ``target`` present, such aside
    copies are stale and removed."""
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return False
    aside = sorted((p for p in parent.glob(f".{glob_escape(target.name)}{OLD}*")
                    if is_temporary(p.name) and not _alive_owner(p)), key=lambda p: p.stat().st_mtime)
    restored = False
    if aside and not os.path.lexists(target):
        os.replace(aside.pop(), target)  # the newest is the one that was in place last
        restored = True
    for p in aside:
        remove(p)
    return restored


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _alive_owner(path: Path) -> bool:
    m = _LEFTOVER.match(path.name)
    return bool(m) and (m["host"] != _HOST or int(m["pid"]) == os.getpid() or _alive(int(m["pid"])))


def sweep(folder: str | Path, *, force: bool = False) -> list[Path]:
    """Remove the temporary files and folders that dead processes of this host left in ``folder`` (once per
    folder and process unless ``force``); aside folders whose target is missing are renamed back first."""
    folder = Path(folder)
    key = Path(os.path.abspath(folder))
    if (key in _swept and not force) or not folder.is_dir():
        return []
    _swept.add(key)
    removed = []
    for p in list(folder.iterdir()):
        m = _LEFTOVER.match(p.name)
        if not m or _alive_owner(p):
            continue
        if m["kind"] == OLD and recover(folder / m["name"]):
            continue
        if os.path.lexists(p):
            remove(p)
            removed.append(p)
    return removed


def fsync(path: Path) -> None:
    """Data on the disk before the rename that publishes it (else a power cut can publish an empty file)."""
    try:
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file() and not p.is_symlink():
                    fsync(p)
            flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
        else:
            flags = os.O_RDONLY
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk or an exceeded quota."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        if _FULL_TEXT.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


Kept = Union[str, Callable[[], str], None]  # what a failed save leaves, or how to find it out


def disk_full_message(target: Path, kept: "Kept", fix: str | None) -> str:
    """``kept`` is what survives, or a function that says it (worked out only when a disk is full, not at every
    save)."""
    if callable(kept):
        kept = kept()
    try:
        usage = shutil.disk_usage(target.parent)
        space = f" ({_size(usage.free)} free of {_size(usage.total)})"
    except OSError:
        space = ""
    kept = kept or (f"the previous {target} is kept" if os.path.lexists(target) else "nothing was written")
    fix = fix or "free some space on that disk and run again"
    return f"Could not write {target}: the disk is full{space}; {kept}; {fix}."


def _raise_if_full(exc: BaseException, target: Path, kept: "Kept", fix: str | None) -> None:
    if isinstance(exc, DiskFullError):
        raise exc
    if is_disk_full(exc):
        raise DiskFullError(disk_full_message(target, kept, fix)) from exc


@contextmanager
def disk_full_guard(target: str | Path, *, kept: "Kept" = None, fix: str | None = None) -> Iterator[None]:
    """A full disk inside the block (a copy, a library's own writer) becomes :class:`DiskFullError` naming
    ``target``; every other error passes unchanged."""
    try:
        yield
    except BaseException as exc:
        _raise_if_full(exc, Path(target), kept, fix)
        raise


@contextmanager
def _replacing(target: Path, kept: "Kept", fix: str | None) -> Iterator[list[Path]]:
    """The frame both writers share: the target's folder made, a full disk turned into :class:`DiskFullError`, and
    the temporary the writer appends to the yielded list removed whatever happens."""
    made: list[Path] = []
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield made
    except BaseException as exc:
        _raise_if_full(exc, target, kept, fix)
        raise
    finally:
        if made and os.path.lexists(made[0]):
            remove(made[0])


@contextmanager
def atomic_path(target: str | Path, *, kept: "Kept" = None, fix: str | None = None) -> Iterator[Path]:
    """A temporary path beside ``target`` to write a file to; a clean exit flushes it and renames it onto
    ``target``, an error (or a kill) leaves ``target`` as it was. A full disk raises :class:`DiskFullError`
    (``kept``: what survives, e.g. "the previous checkpoint X is kept"; ``fix``: what to do)."""
    target = Path(target)
    with _replacing(target, kept, fix) as made:
        sweep(target.parent)
        tmp = temp_name(target)
        made.append(tmp)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        yield tmp
        fsync(tmp)
        os.replace(tmp, target)


@contextmanager
def atomic_dir(target: str | Path, *, kept: "Kept" = None, fix: str | None = None,
               option: str | None = None) -> Iterator[Path]:
    """A fresh temporary folder beside ``target`` to fill; a clean exit puts it in place of ``target`` (an existing
    ``target`` is replaced, never merged into) such that at every moment the old or the new complete folder is
    there. An error leaves ``target`` as it was; a full disk raises :class:`DiskFullError`. With ``option`` (the
    user's option that named ``target``, for the message), a ``target`` that is not an earlier output of the same
    kind (no name in common with the new folder) is refused instead of replaced."""
    target = Path(target)
    with _replacing(target, kept, fix) as made:
        sweep(target.parent, force=True)  # folders are few and written seldom: look every time
        recover(target)
        tmp = temp_name(target)
        made.append(tmp)
        tmp.mkdir()
        yield tmp
        if option is not None:
            refuse_foreign_dir(target, tmp, option)
        fsync(tmp)
        publish_dir(tmp, target)


def publish_dir(new: Path, target: Path) -> None:
    if not os.path.lexists(target):
        os.rename(new, target)  # a folder that appeared meanwhile makes this fail rather than nest
        fsync(target.parent)
        return
    if exchange(new, target):  # `new` now holds the old folder
        fsync(target.parent)
        remove(new)
        return
    old = temp_name(target, OLD)
    os.rename(target, old)
    os.rename(new, target)  # a crash right before this line: recover() renames `old` back
    fsync(target.parent)
    remove(old)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2 = None


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system
    or the filesystem has no such call (the caller then renames in two steps)."""
    global _renameat2
    if not sys.platform.startswith("linux"):
        return False
    if _renameat2 is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
        except (AttributeError, OSError):
            _renameat2 = False
            return False
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
        _renameat2 = fn
    if _renameat2 is False:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
        return False
    raise OSError(code, os.strerror(code), str(b))


def refuse_foreign_dir(target: Path, new: Path, option: str) -> None:
    """Before ``new`` replaces ``target``: an existing folder that holds files but none of the names ``new`` has
    (what an earlier output of the same command had) is someone else's folder, and is not replaced."""
    if target.exists() and not target.is_dir():
        raise UserError(f"{option} {target} is a file, not a folder: give a new folder name.")
    if target.is_dir():
        theirs = {p.name for p in target.iterdir()}
        if theirs and not theirs & {p.name for p in new.iterdir()}:
            raise UserError(f"{option} {target} is a folder with other files in it, which this command would "
                            f"replace: give a new folder name.")


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8", errors: str = "strict", **kw) -> None:
    """``path.write_text(text)``, atomically."""
    with atomic_path(path, **kw) as tmp:
        with open(tmp, "w", encoding=encoding, errors=errors) as fh:
            fh.write(text)
