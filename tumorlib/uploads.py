"""Where a serving process keeps uploads and results: a folder of its own, swept on a timer, gone after a crash.

A web framework's cache outlives a process killed hard (an out-of-memory kill, SIGKILL, a power cut):
its own deletion only tracks what the living process made. So each process keeps everything in its own
area, ``<temp>/tumour-app/<pid>-<start time>/``, and

- at start removes the areas of processes that are gone (no such pid, or a pid reused by a process
  started at another time), leaving the areas of live processes and everything outside ``tumour-app/``
  (other programs' files in a shared temp folder) alone;
- while it runs removes every file of its area older than ``keep_seconds``, checked every
  ``interval`` seconds, except those a ``keep`` callback names (an app's example gallery);
- removes its area at a normal exit.

Nothing here knows a UI toolkit: the app points its framework's cache at :attr:`UploadArea.path`.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: The folder, inside the temp folder, that holds one area per serving process.
AREA_DIR = "tumour-app"
_AREA_NAME = re.compile(r"^(\d+)-(\d+)$")


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in hundredths of a second since the epoch (0 where the system does
    not say); None if no such process runs. A pid reused by a later process gets another start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:  # Linux: field 22 is the start, in clock ticks since boot
            ticks = int(file.read().rsplit(b")", 1)[1].split()[19])
        return round((_boot_time() + ticks / os.sysconf("SC_CLK_TCK")) * 100)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):  # no /proc (macOS, Windows): whether it runs is all we learn
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except (PermissionError, OSError):  # someone else's process (PermissionError): it runs
            pass
        return 0


@functools.cache
def _boot_time() -> float:
    """Seconds since the epoch at which this machine booted (Linux's /proc/stat)."""
    with open("/proc/stat", "rb") as file:
        for line in file:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")


def is_alive(pid: int, started: int) -> bool:
    """Whether the process that made an area named ``<pid>-<started>`` still runs (not a reused pid)."""
    now = process_start(pid)
    return now is not None and (now == 0 or abs(now - started) <= 1)


def default_base() -> Path:
    """Where uploads go by default: ``GRADIO_TEMP_DIR``, else ``<system temp>/gradio`` (Gradio's own rule)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


@dataclass
class UploadArea:
    """This process's folder for uploads, overlays and result files (see the module docstring)."""

    base: Path
    keep_seconds: float
    interval: float = 60.0
    path: Path = field(init=False)
    _keep: list[Callable[[], Iterable[str]]] = field(init=False, default_factory=list)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)

    def __post_init__(self) -> None:
        pid = os.getpid()
        self.path = Path(self.base) / AREA_DIR / f"{pid}-{process_start(pid) or 0}"

    @property
    def root(self) -> Path:
        return self.path.parent

    def open(self) -> UploadArea:
        """Remove the areas of processes that are gone, make this one (private), start sweeping it."""
        self.root.mkdir(parents=True, exist_ok=True)
        removed = remove_dead_areas(self.root, self.keep_seconds, own=self.path)
        if removed:
            log.info("Removed %d upload area(s) left by processes that are gone", removed)
        self.path.mkdir(mode=0o700, exist_ok=True)
        thread = threading.Thread(target=self._sweep_forever, name="upload-sweeper", daemon=True)
        thread.start()
        atexit.register(self.close)
        return self

    def keep(self, files: Callable[[], Iterable[str]]) -> None:
        """Never sweep the files ``files()`` names (called at every sweep)."""
        self._keep.append(files)

    def sweep(self, now: float | None = None) -> int:
        """Remove every file of the area older than ``keep_seconds`` (and emptied folders); returns how many."""
        cutoff = (time.time() if now is None else now) - self.keep_seconds
        keep = {os.path.realpath(p) for files in self._keep for p in files()}
        return _remove_older(self.path, cutoff, keep)

    def close(self) -> None:
        """Stop sweeping and remove the area (a normal exit)."""
        self._stop.set()
        shutil.rmtree(self.path, ignore_errors=True)

    def _sweep_forever(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except OSError:  # a file vanishing under us is no reason to stop keeping the promise
                log.exception("Sweeping the upload area failed")


def remove_dead_areas(root: Path, keep_seconds: float, own: Path | None = None) -> int:
    """Remove the areas under ``root`` whose process is gone (and unnamed leftovers older than
    ``keep_seconds``); live processes' areas stay. Returns how many were removed."""
    removed = 0
    try:
        entries = list(root.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if own is not None and entry == own:
            continue
        found = _AREA_NAME.match(entry.name)
        try:
            if found:
                if is_alive(int(found.group(1)), int(found.group(2))):
                    continue
            elif entry.lstat().st_mtime > time.time() - keep_seconds:
                continue
        except OSError:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


def _remove_older(folder: Path, cutoff: float, keep: set[str]) -> int:
    removed = 0
    for parent, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            file = os.path.join(parent, name)
            try:
                info = os.lstat(file)
                if max(info.st_mtime, info.st_ctime) < cutoff and os.path.realpath(file) not in keep:
                    os.unlink(file)
                    removed += 1
            except OSError:
                pass
        if parent != str(folder):
            for name in dirs:
                try:
                    sub = os.path.join(parent, name)
                    if os.lstat(sub).st_mtime < cutoff:
                        os.rmdir(sub)  # only when empty
                except OSError:
                    pass
    return removed


_OPEN: dict[Path, UploadArea] = {}
_LOCK = threading.Lock()


def claim(keep_seconds: float, base: Path | None = None, interval: float | None = None) -> UploadArea:
    """This process's area under ``base`` (default :func:`default_base`), opened on first use.

    ``base`` may already be this process's own area (``GRADIO_TEMP_DIR`` pointed there by an earlier call):
    then that area is returned, not one nested inside it.
    """
    base = Path(base or default_base())
    for area in _OPEN.values():
        if base == area.path:
            return area
    interval = interval or min(60.0, keep_seconds)
    with _LOCK:
        area = _OPEN.get(base)
        if area is None or not area.path.is_dir():
            area = UploadArea(base, keep_seconds, interval).open()
            _OPEN[base] = area
        area.keep_seconds, area.interval = keep_seconds, interval  # the latest promise holds from the next sweep
        return area


def current() -> Path | None:
    """The area of this process that ``GRADIO_TEMP_DIR`` points to, if it is one (else None)."""
    env = os.environ.get("GRADIO_TEMP_DIR")
    if not env:
        return None
    for area in _OPEN.values():
        if Path(env) == area.path:
            return area.path
    return None
