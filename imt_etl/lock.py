"""A per-output-folder lock: two runs writing the same state and tables at once is refused.

The lock is an `fcntl.flock` on `<out>/state/.lock`, held for the whole run. The kernel drops it
when the holder's process ends in any way (even SIGKILL), so a crashed run never leaves a stale
lock behind and nothing needs cleaning up by hand. The file itself stays (removing it would let
two runs lock two different inodes); while locked it holds the holder's pid, host and start time,
so the refusal message can say who is running. POSIX only (Linux, macOS); on NFS, Linux emulates
flock with byte-range locks, which works between clients of the same server.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from imt_etl.errors import LockError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
F = TypeVar("F", bound=Callable[..., Any])


def lock_path(out_dir: Path) -> Path:
    return Path(out_dir) / "state" / LOCK_FILE


class OutputLock:
    """Exclusive lock on one output folder; `wait` seconds to wait for it (0: fail at once)."""

    def __init__(self, out_dir: Path, *, wait: float = 0.0, poll: float = 0.1) -> None:
        self.out_dir = Path(out_dir)
        self.path = lock_path(self.out_dir)
        self.wait = wait
        self.poll = poll
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> OutputLock:
        if self._fd is not None:
            raise RuntimeError(f"the lock on {self.out_dir} is already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(0.0, self.wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockError(self._refusal()) from None
                time.sleep(self.poll)
        self._fd = fd
        self._write_holder(fd)
        log.debug("locked output folder %s", self.out_dir)
        return self

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # so that nobody later reads a finished run as the holder
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        log.debug("unlocked output folder %s", self.out_dir)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def _write_holder(fd: int) -> None:
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)

    def _refusal(self) -> str:
        holder = read_holder(self.out_dir)
        who = "another imt-etl run"
        if holder.get("pid"):
            who += f" (pid {holder['pid']}"
            who += f" on {holder['host']}" if holder.get("host") else ""
            who += f", since {holder['since']})" if holder.get("since") else ")"
        waited = f" after waiting {self.wait:g} s" if self.wait > 0 else ""
        return (f"{who} is writing to the output folder {self.out_dir} (lock file "
                f"{self.path}){waited}; wait for it to finish or choose another --out folder")


def read_holder(out_dir: Path) -> dict[str, Any]:
    """Who holds (or last held) the lock, as far as the lock file says; {} when unknown."""
    try:
        data = json.loads(lock_path(out_dir).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}  # the holder may be between truncating and writing: best effort only
    return data if isinstance(data, dict) else {}


def holds_output_lock(run: F) -> F:
    """Decorate `run(settings, ...)`: the whole call holds the lock on `settings.out_dir`."""

    @functools.wraps(run)
    def locked(settings: Any, *args: Any, **kwargs: Any) -> Any:
        with OutputLock(Path(settings.out_dir)):
            return run(settings, *args, **kwargs)

    return locked  # type: ignore[return-value]
