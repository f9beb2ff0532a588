"""What one deployment serves, read from the environment when the definitions load.

IMT_ETL_PROJECTS names a projects file (see projects.py); without it IMT_ETL_DEPLOYMENT picks the
single project: `emulator` (default: the bundled reference study on loopback) or `redcap`
(REDCAP_API_URL, token in REDCAP_API_TOKEN). IMT_ETL_OUT sets the output root and
IMT_ETL_DICTIONARY a data-dictionary CSV listing the instruments (default: the reference study's;
every project of one deployment is expected to share these instruments, as sites of one study do).
"""

from __future__ import annotations

import os
from pathlib import Path

from imt_etl.errors import ConfigError
from imt_etl.redcap.dictionary import DataDictionary

REFERENCE_DICTIONARY = (
    Path(__file__).resolve().parent.parent / "imt_etl" / "studies" / "imt" / "data_dictionary.csv"
)


def instrument_names() -> list[str]:
    """Instruments from the configured data-dictionary CSV (default: the reference study's)."""
    path = Path(os.environ.get("IMT_ETL_DICTIONARY") or REFERENCE_DICTIONARY)
    try:
        return DataDictionary.from_csv_file(path).forms
    except OSError as exc:
        raise ConfigError(f"data dictionary {path}: cannot be read ({exc.strerror})") from exc
