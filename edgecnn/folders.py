"""Export folders swapped in whole, and the recovery that makes a killed swap harmless (stdlib only).

An export is built in a hidden staging folder beside its target, ``.X.tmp-PID-random``, and swapped in with two
renames: ``X -> .X.old-PID``, then ``.X.tmp-... -> X``; the old copy is removed last. A process killed between the
two renames leaves no ``X`` at all, only the hidden old copy; one killed while building leaves its staging folder.
Both names carry the PID of the process that made them, so :func:`recover_swapped` can tell a dead run's leftovers
from a live run's work in progress. Export calls it before it starts, and ``manifest.read`` (every load) before it
reads, so the next export or load puts the previous export back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

OLD_TAG = ".old-"
STAGING_TAG = ".tmp-"


def make_staging(target: str | os.PathLike) -> Path:
    """A new, private (0700) staging folder beside ``target``: ``.X.tmp-PID-random``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_TAG}{os.getpid()}-", dir=target.parent))


def swap_in(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the finished ``staging`` folder in place of ``target`` (created or replaced), with the umask's mode.

    Staging folders are private while they are built (``tempfile.mkdtemp`` makes them 0700); the export itself gets
    the mode any folder the user creates would get. If the second rename fails, the previous ``target`` is put
    back before the error propagates.
    """
    staging, target = Path(staging), Path(target)
    os.chmod(staging, 0o777 & ~current_umask())
    old = None
    if os.path.lexists(target):
        old = target.with_name(f".{target.name}{OLD_TAG}{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_swapped(target: str | os.PathLike) -> None:
    """Undo what a killed export left beside ``target``; never raises (a read-only folder is left as it is).

    * ``target`` missing and a ``.X.old-PID`` of a dead process: that copy is the previous export, renamed back;
    * ``target`` present: ``.X.old-PID`` copies of dead processes are stale and removed;
    * ``.X.tmp-PID-*`` staging folders of dead processes are removed.

    Leftovers of live processes are theirs: an export may be between its renames right now.
    """
    target = Path(target)
    name = target.name
    if not name or name in (".", ".."):
        return
    old_prefix, staging_prefix = f".{name}{OLD_TAG}", f".{name}{STAGING_TAG}"
    try:
        with os.scandir(target.parent if str(target.parent) else ".") as entries:
            leftovers = [e.name for e in entries if e.name.startswith((old_prefix, staging_prefix))]
    except OSError:
        return
    olds, stagings = [], []
    for entry in leftovers:
        if entry.startswith(old_prefix):
            pid = entry[len(old_prefix):]
            if pid.isdigit() and not pid_alive(int(pid)):
                olds.append(target.with_name(entry))
        else:
            pid = entry[len(staging_prefix):].partition("-")[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                stagings.append(target.with_name(entry))
    if olds and not os.path.lexists(target):
        newest = max(olds, key=_mtime)
        try:
            os.rename(newest, target)
            olds.remove(newest)
        except OSError:
            pass
    for leftover in olds + stagings:
        shutil.rmtree(leftover, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (when unsure, yes: a live run's folders must never be touched)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def _windows_pid_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists
    try:
        code = ctypes.c_ulong()
        return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux), else by setting it back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
