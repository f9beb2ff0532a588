"""Build the shipped ADL demo project XML (`python -m imt_etl.studies.adl.build`).

Run it after changing the dictionary, design or generator and commit the result; a test fails
when the shipped file no longer matches what this builds.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from imt_etl.io import write_bytes_atomic
from imt_etl.redcap.project_xml import write_project_xml
from imt_etl.studies.adl.design import HERE
from imt_etl.studies.adl.generator import generate_project

log = logging.getLogger(__name__)

DEMO_N = 57  # the trial's enrolment (30 intervention, 27 control)
DEMO_SEED = 2017
XML_NAME = "adl_project.xml"


def project_xml_bytes() -> bytes:
    """The demo project (57 synthetic participants) as REDCap project XML."""
    return write_project_xml(generate_project(DEMO_N, DEMO_SEED))


def build(out_dir: Path = HERE) -> Path:
    """Write the project XML into `out_dir`; returns its path."""
    path = write_bytes_atomic(Path(out_dir) / XML_NAME, project_xml_bytes())
    log.info("wrote %s", path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where to write the file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.out_dir)


if __name__ == "__main__":
    main()
