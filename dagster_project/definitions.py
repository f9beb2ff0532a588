"""The Dagster Definitions: assets over the library, resources from the deployment settings."""

from __future__ import annotations

import dagster as dg

from dagster_project.assets import build_assets
from dagster_project.deployment import instrument_names, output, redcap_source

sync_all = dg.define_asset_job("sync_all", selection=dg.AssetSelection.all())

defs = dg.Definitions(
    assets=build_assets(instrument_names()),
    jobs=[sync_all],
    resources={"redcap": redcap_source(), "output": output()},
)
