"""Analysis instrument tables built from a row subset (valid rows keep their original index)."""

import json

import pandas as pd

from imt_etl.redcap.emulator_store import ProjectStore, handle_request
from imt_etl.redcap.tidy import ProjectMeta, tidy_instruments
from imt_etl.tables.instruments import analysis_instrument

TOKEN = "0" * 32


def test_a_filtered_table_keeps_every_key(reference_project):
    meta = ProjectMeta.from_definition(reference_project)
    store = ProjectStore(reference_project)
    params = {"token": TOKEN, "content": "record", "format": "json", "type": "flat",
              "records[0]": "001", "records[1]": "002"}
    rows = json.loads(handle_request(store, params, TOKEN).body)
    diary = tidy_instruments(rows, meta, forms=["training_diary"]).tables["training_diary"]
    subset = diary[diary.index % 2 == 1]  # every other row, index not reset
    table = analysis_instrument("training_diary", subset, meta.dictionary).frame
    assert len(table) == len(subset) > 0
    assert table["participant"].notna().all()
    pd.testing.assert_series_equal(table["diary_breaths"].reset_index(drop=True),
                                   subset["diary_breaths"].reset_index(drop=True),
                                   check_names=False)
