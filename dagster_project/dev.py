"""`make dagster`: `dagster dev` on loopback, emulator demo, local DAGSTER_HOME, no telemetry.

Usage: python -m dagster_project.dev [--host 127.0.0.1] [--port 3000] [--home DIR]

The process execs `dagster dev` after resetting SIGINT and SIGTERM to their defaults: a shell
starts background jobs with SIGINT ignored, the ignore survives exec, and `dagster dev` maps
SIGTERM onto SIGINT, so without the reset it could not be stopped from a script.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOME = ROOT / ".dagster_home"

# Written once; an existing dagster.yaml is left alone (the user may have tuned it).
INSTANCE_YAML = """\
telemetry:
  enabled: false
# Runs of one project must not overlap (they share its sync state): at most one run per
# partition (= project) at a time; the others wait in the queue.
run_queue:
  max_concurrent_runs: 4
  tag_concurrency_limits:
    - key: dagster/partition
      value:
        applyLimitPerUniqueValue: true
      limit: 1
"""


def prepare_home(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_YAML, encoding="utf-8")
    return home


def dev_command(host: str, port: int) -> list[str]:
    dagster = Path(sys.executable).with_name("dagster")
    return [str(dagster), "dev", "-h", host, "-p", str(port), "-m", "dagster_project.definitions"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dagster_project.dev", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME,
                        help="DAGSTER_HOME (default: .dagster_home in the project folder)")
    args = parser.parse_args(argv)
    os.environ["DAGSTER_HOME"] = str(prepare_home(args.home.resolve()))
    os.environ.setdefault("IMT_ETL_DEPLOYMENT", "emulator")
    os.environ.setdefault("IMT_ETL_OUT", str(ROOT / "out" / "dagster"))
    os.environ["DAGSTER_DISABLE_TELEMETRY"] = "1"
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(ROOT)
    command = dev_command(args.host, args.port)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
