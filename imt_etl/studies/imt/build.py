"""Build the shipped reference files: the REDCap project XML and the flaw manifest.

Run `python -m imt_etl.studies.imt.build` after changing the dictionary, design or generator, and
commit the result; a test fails when the shipped files no longer match what this builds.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from imt_etl.io import write_bytes_atomic, write_text_atomic
from imt_etl.redcap.project_xml import write_project_xml
from imt_etl.studies.imt.design import HERE
from imt_etl.studies.imt.generator import GeneratedStudy, generate_study

log = logging.getLogger(__name__)

REFERENCE_N = 33  # the trial's enrolment target
REFERENCE_SEED = 2024
XML_NAME = "imt_project.xml"
MANIFEST_NAME = "manifest.json"


def reference_study() -> GeneratedStudy:
    """The 33-participant reference data set, with its deliberate errors and deviations."""
    return generate_study(REFERENCE_N, REFERENCE_SEED, with_errors=True)


def manifest_text(study: GeneratedStudy) -> str:
    """The manifests as stable, diff-friendly JSON."""
    document = {
        "n_participants": len(study.project.record_ids()),
        "seed": REFERENCE_SEED,
        "deliberate_errors": [asdict(e) for e in study.errors],
        "protocol_deviations": [asdict(d) for d in study.deviations],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def build(out_dir: Path = HERE) -> list[Path]:
    """Write the manifest and the project XML into `out_dir`; returns the paths written."""
    study = reference_study()
    manifest_path = write_text_atomic(Path(out_dir) / MANIFEST_NAME, manifest_text(study))
    xml_path = write_bytes_atomic(Path(out_dir) / XML_NAME, write_project_xml(study.project))
    log.info("wrote %s and %s", xml_path, manifest_path)
    return [xml_path, manifest_path]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where to write the files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.out_dir)


if __name__ == "__main__":
    main()
