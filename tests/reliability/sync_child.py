"""One sync in a child process, for the crash tests (the kill point comes from the environment).

Usage: python sync_child.py URL OUT_DIR RUN_TIME full|incremental  (token in REDCAP_API_TOKEN)
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

if __name__ == "__main__":
    url, out, run_time, mode = sys.argv[1:5]
    settings = fast_settings(url, os.environ[TOKEN_ENV], Path(out), batch_size=1,
                             run_time=datetime.fromisoformat(run_time))
    pipeline.run(settings, incremental=mode == "incremental")
