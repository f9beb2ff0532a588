"""One sync in a child process, for the crash tests (the kill point comes from the environment).

Usage: python sync_child.py URL OUT_DIR RUN_TIME full|incremental  (token in REDCAP_API_TOKEN)

The crash tests start `run_in_child` in processes forked from a multiprocessing forkserver that
preloaded PRELOAD: each child is a separate OS process, killed for real, but does not spend
seconds importing pandas, pyarrow, matplotlib and the package again.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import fast_settings  # noqa: E402

from imt_etl import pipeline  # noqa: E402
from imt_etl.config import TOKEN_ENV  # noqa: E402
from imt_etl.faultpoints import CRASH_ENV  # noqa: E402

# What a run imports (some of it lazily), for the forkserver to import once.
PRELOAD = ["sync_child", "imt_etl.pipeline", "imt_etl.outputs", "imt_etl.dateshift",
           "imt_etl.fhir.export", "imt_etl.fhir.writer", "imt_etl.fhir.study",
           "imt_etl.report.study", "imt_etl.tables.build", "imt_etl.validate.report"]


def sync(url: str, out: str, token: str, run_time: str, mode: str) -> None:
    settings = fast_settings(url, token, Path(out), batch_size=1,
                             run_time=datetime.fromisoformat(run_time))
    pipeline.run(settings, incremental=mode == "incremental")


def run_in_child(url: str, out: str, token: str, run_time: str, mode: str,
                 crash_at: str | None, stderr_path: str) -> None:
    """Body of a forked child: its stderr to `stderr_path`, stdout discarded, the kill point
    (or none) in its environment, then the sync."""
    with open(stderr_path, "wb") as err, open(os.devnull, "wb") as null:
        os.dup2(err.fileno(), 2)
        os.dup2(null.fileno(), 1)
    os.environ.pop(CRASH_ENV, None)
    if crash_at:
        os.environ[CRASH_ENV] = crash_at
    sync(url, out, token, run_time, mode)


if __name__ == "__main__":
    url, out, run_time, mode = sys.argv[1:5]
    sync(url, out, os.environ[TOKEN_ENV], run_time, mode)
