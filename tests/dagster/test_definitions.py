"""The real Dagster definitions load, and the graph materializes in-process against the emulator."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from dagster_project.assets import build_assets
from dagster_project.definitions import defs
from dagster_project.resources import OutputResource, RedcapSource


def test_definitions_load_and_every_job_resolves():
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert "redcap_snapshot" in keys and "instrument_training_diary" in keys
    assert len(keys) == 14  # the snapshot + one asset per instrument of the reference study
    for job in defs.resolve_all_job_defs():
        assert job.name


class LiveEmulator(RedcapSource):
    """A resource bound to an already running emulator (the test's own copy of the data)."""

    url: str
    token: str

    def connect(self):
        from contextlib import contextmanager

        from dagster_project.resources import RedcapConnection
        from imt_etl.redcap.client import RedcapClient

        @contextmanager
        def opened():
            yield RedcapConnection(self.project_name, RedcapClient(self.url, self.token), 10)

        return opened()


def test_materialize_the_graph_against_the_emulator(live_reference, reference_project, tmp_path):
    emulator, token = live_reference
    forms = reference_project.dictionary.forms
    result = dg.materialize(
        build_assets(forms),
        resources={
            "redcap": LiveEmulator(url=emulator.url, token=token, project_name="imt"),
            "output": OutputResource(out_dir=str(tmp_path)),
        },
    )
    assert result.success
    snapshot_meta = result.asset_materializations_for_node("redcap_snapshot")[0].metadata
    assert snapshot_meta["records"].value == 33 and snapshot_meta["mode"].text == "full"
    diary = result.asset_materializations_for_node("instrument_training_diary")[0].metadata
    on_disk = pd.read_parquet(tmp_path / "parquet" / "instruments" / "training_diary.parquet")
    assert diary["rows"].value == len(on_disk) > 0


def test_bundled_emulator_resource_serves_the_reference_project(tmp_path):
    result = dg.materialize(
        build_assets(["enrollment"]),
        resources={
            "redcap": defs.resources["redcap"],
            "output": OutputResource(out_dir=str(tmp_path)),
        },
    )
    assert result.success
    assert len(pd.read_parquet(tmp_path / "parquet" / "instruments" / "enrollment.parquet")) == 33
