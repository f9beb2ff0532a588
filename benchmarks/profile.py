"""Profile one full sync with pyinstrument (main process only; FHIR workers are not sampled).

    python benchmarks/profile.py N OUT_DIR > profile.txt

The benchmark workload at N participants is served by the emulator in this same process, so the
extraction figure includes the server's share of the CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyinstrument  # noqa: E402

from benchmarks.workload import make_project, serve, settings  # noqa: E402
from imt_etl import pipeline  # noqa: E402


def main(argv: list[str]) -> None:
    participants, out = int(argv[0]), Path(argv[1])
    with serve(make_project(participants)) as (emulator, token):
        profiler = pyinstrument.Profiler(interval=0.005)
        profiler.start()
        summary = pipeline.run(settings(emulator.url, token, out))
        profiler.stop()
    print(summary.durations_s)
    print(profiler.output_text(unicode=False, color=False))


if __name__ == "__main__":
    main(sys.argv[1:])
