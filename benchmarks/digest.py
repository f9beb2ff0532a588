"""Fingerprint every output of a full and an incremental sync, to prove a change keeps them.

    python benchmarks/digest.py N OUT_DIR [--against OTHER.json]

Serves the benchmark workload at N participants, runs a full sync and, after 1 % of records
changed, an incremental one (each a `benchmarks.child` process, as `make bench`), and writes
OUT_DIR.json: the sha256 of every output file outside state/ (run-summary.json excluded: it
holds times). With --against, lists the files whose bytes differ and exits 1 if any do: run it
on the old commit, then on the new one against the old digest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.run import INCREMENTAL_FRACTION, run_child  # noqa: E402
from benchmarks.workload import change_records, make_project, serve  # noqa: E402


def output_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "run-summary.json" and "state" not in p.parts}


def digest_runs(participants: int, out: Path, runner=run_child) -> dict[str, dict[str, str]]:
    shutil.rmtree(out, ignore_errors=True)
    with serve(make_project(participants)) as (emulator, token):
        runner("full", emulator.url, token, out)
        full = output_digest(out)
        change_records(emulator, INCREMENTAL_FRACTION)
        runner("incremental", emulator.url, token, out)
    return {"full": full, "incremental": output_digest(out)}


def differences(new: dict, old: dict) -> list[str]:
    return [f"{mode}: {name}" for mode in old
            for name in sorted(set(old[mode]) | set(new.get(mode, {})))
            if old[mode].get(name) != new.get(mode, {}).get(name)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("participants", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--against", type=Path, help="a digest written by an earlier run")
    args = parser.parse_args(argv)
    got = digest_runs(args.participants, args.out)
    Path(f"{args.out}.json").write_text(json.dumps(got, indent=1) + "\n")
    files = sum(len(v) for v in got.values())
    if args.against is None:
        print(f"{files} output files digested: {args.out}.json")
        return 0
    differing = differences(got, json.loads(args.against.read_text()))
    print("\n".join(differing) or f"identical: {files} files, full and incremental")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
