"""The incremental-sync watermark of a project, kept as a small JSON file written atomically."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from imt_etl.io import write_json_atomic

log = logging.getLogger(__name__)

STATE_FILE = "sync-state.json"
STATE_VERSION = 1
# REDCap's dateRangeBegin / beginTime format (server local time, naive).
WATERMARK_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class SyncState:
    """What the last fully successful sync saw.

    `watermark` is the REDCap-local time from which the next incremental sync asks for changed
    records and deletions; the caller saves a new state only after the whole run succeeded.
    """

    project: str
    last_success: datetime
    watermark: str

    def watermark_time(self) -> datetime:
        return datetime.strptime(self.watermark, WATERMARK_FORMAT)

    def to_json(self) -> dict[str, object]:
        return {
            "version": STATE_VERSION,
            "project": self.project,
            "last_success": self.last_success.isoformat(),
            "watermark": self.watermark,
        }

    @classmethod
    def from_json(cls, data: dict) -> SyncState:
        state = cls(
            project=str(data["project"]),
            last_success=datetime.fromisoformat(str(data["last_success"])),
            watermark=str(data["watermark"]),
        )
        state.watermark_time()  # refuse a state whose watermark REDCap would not understand
        return state


def state_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def load_state(state_dir: Path) -> SyncState | None:
    """The saved state in `state_dir`, or None when there is none (or it is unreadable).

    An unreadable state is logged and ignored: the caller then runs a full sync, which is always
    correct, only slower.
    """
    path = state_path(state_dir)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown state version {data.get('version')!r}")
        return SyncState.from_json(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring unreadable sync state %s (%s); the next sync is full", path, exc)
        return None


def save_state(state_dir: Path, state: SyncState) -> Path:
    """Write the state atomically (temp file in the same folder, fsync, rename, fsync folder)."""
    path = write_json_atomic(state_path(state_dir), state.to_json())
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    # The rename is only durable once the directory entry is on disk (POSIX); not on Windows.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
