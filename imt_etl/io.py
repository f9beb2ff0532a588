"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A reader (or a run killed half-way) therefore only ever sees the old file or the new one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from imt_etl.faultpoints import maybe_crash

# `.<name>.<8 random characters>.tmp`: what tempfile.mkstemp makes for the writers below.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_stale_temp_files(root: Path) -> list[Path]:
    """Delete the temp files that writes killed mid-way left under `root`; return them.

    Only safe while holding the output folder's lock (imt_etl.lock): then no write is live.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    stale = [p for p in root.rglob(".*.tmp") if p.is_file() and _TEMP_NAME.match(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        maybe_crash("atomic-write", path)  # crash-safety test hook: temp complete, no rename yet
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextmanager
def atomic_writer(path: Path) -> Iterator[Any]:
    """A binary file handle (`write` only) for a file too big to hold in memory: written to a
    temp file, renamed over `path` only when the block ends without an exception."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as handle:
            yield _WritebackFile(handle)
            handle.flush()
            os.fsync(handle.fileno())
        maybe_crash("atomic-write", path)  # same hook (and count) as every other atomic write
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _WritebackFile:
    """A file whose pages the kernel starts writing to disk every `WRITEBACK_BYTES`, so that
    the fsync at the end waits for the last stretch only, not for the whole file: on a 1.4 GB
    FHIR export the disk writes while the merge goes on (Linux `sync_file_range`; elsewhere
    the kernel's own writeback)."""

    WRITEBACK_BYTES = 32 << 20

    def __init__(self, handle):
        self._handle, self._unsent, self._sent = handle, 0, 0

    def write(self, data: bytes) -> int:
        written = self._handle.write(data)
        self._unsent += written
        if self._unsent >= self.WRITEBACK_BYTES:
            self._handle.flush()
            start_writeback(self._handle.fileno(), self._sent, self._unsent)
            self._sent, self._unsent = self._sent + self._unsent, 0
        return written


def _writeback_call():
    try:
        import ctypes

        call = ctypes.CDLL(None, use_errno=True).sync_file_range
        call.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
        return call
    except (OSError, AttributeError):  # not Linux
        return None


_SYNC_FILE_RANGE = _writeback_call()
_SYNC_FILE_RANGE_WRITE = 2  # start writing the dirty pages out; do not wait (linux/fs.h)


def start_writeback(fd: int, offset: int, length: int) -> None:
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # advisory: errors ignored


@dataclass(frozen=True)
class StagedFile:
    """Data written to a temp file beside `path`, not yet synced nor renamed (`stage_bytes`):
    `commit()`, from any thread, makes it `path` atomically. Split in two so that a writer of
    many files can sync one on a thread while it prepares the next."""

    fd: int
    tmp: Path
    path: Path

    def commit(self) -> Path:
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)
        try:
            maybe_crash("atomic-write", self.path)  # the same hook as every atomic write
            os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
        return self.path


def stage_bytes(path: Path, data: bytes) -> StagedFile:
    """`data` in a new temp file beside `path`, its writeback started; see `StagedFile`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        start_writeback(fd, 0, len(data))
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return StagedFile(fd, Path(tmp), path)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    return stage_bytes(path, data).commit()


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Pretty, key-sorted JSON so that files diff well between runs."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return write_text_atomic(path, text + "\n")


def write_parquet_atomic(path: Path, table: pa.Table) -> Path:
    return _atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
