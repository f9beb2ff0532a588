"""Which REDCap the definitions talk to, chosen by environment variables (read at load time).

IMT_ETL_DEPLOYMENT=emulator (default) serves the bundled reference project on loopback;
IMT_ETL_DEPLOYMENT=redcap uses REDCAP_API_URL and the token in REDCAP_API_TOKEN (as a Dagster
EnvVar: resolved at launch, never shown in the UI). IMT_ETL_OUT sets the output folder and
IMT_ETL_DICTIONARY a data-dictionary CSV listing the instruments of a non-reference project.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import dagster as dg

from dagster_project.resources import (
    EmulatorRedcapResource,
    OutputResource,
    RedcapResource,
    RedcapSource,
)
from imt_etl.redcap.dictionary import DataDictionary

REFERENCE_DICTIONARY = (
    Path(__file__).resolve().parent.parent / "imt_etl" / "studies" / "imt" / "data_dictionary.csv"
)


def deployment() -> str:
    value = os.environ.get("IMT_ETL_DEPLOYMENT", "emulator").strip().lower()
    if value not in ("emulator", "redcap"):
        raise dg.DagsterInvalidDefinitionError(
            f"IMT_ETL_DEPLOYMENT must be 'emulator' or 'redcap' (got {value!r})"
        )
    return value


def instrument_names() -> list[str]:
    """Instruments from the configured data-dictionary CSV (default: the reference study's)."""
    path = Path(os.environ.get("IMT_ETL_DICTIONARY") or REFERENCE_DICTIONARY)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return DataDictionary.from_csv_rows(csv.DictReader(handle)).forms


def redcap_source() -> RedcapSource:
    if deployment() == "emulator":
        return EmulatorRedcapResource(project_name="imt-demo")
    return RedcapResource(
        url=os.environ.get("REDCAP_API_URL", ""),
        token=dg.EnvVar("REDCAP_API_TOKEN"),
        project_name=os.environ.get("IMT_ETL_PROJECT", "redcap"),
    )


def output() -> OutputResource:
    return OutputResource(out_dir=os.environ.get("IMT_ETL_OUT", "out/dagster"))
