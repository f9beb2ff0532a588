"""A stage asset in a few lines: partitioned by project, timed, errors named by project.

    @stage_asset(name="quality_report", group=VALIDATE_GROUP, deps=INSTRUMENTS,
                 description="...")
    def quality_report(run: StageRun) -> dict:
        meta, snapshot = pipeline.load_extraction_inputs(run.out_dir)
        ...
        return {"quarantined_rows": n}          # becomes materialization metadata

then list it in `stage_assets.STAGES`. The wrapper adds `project` and `duration_s` to the
metadata and turns a library error (ImtEtlError) into a Dagster Failure that names the project,
so one project's failure reads clearly in the UI and leaves the other partitions alone.
"""

# No `from __future__ import annotations`: Dagster reads the runtime annotations of the asset
# function built below to find its context and resources.
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_project.projects import ProjectSpec
from dagster_project.resources import ProjectsResource
from imt_etl.errors import ImtEtlError

EXTRACT_GROUP = "redcap_extract"
INSTRUMENT_GROUP = "instrument_tables"
VALIDATE_GROUP = "validation"
FHIR_GROUP = "fhir"
ANALYSIS_GROUP = "analysis"
REPORT_GROUP = "run_reports"

# `deps=INSTRUMENTS` stands for every instrument table asset of the deployment.
INSTRUMENTS = "<instrument tables>"


@dataclass
class StageRun:
    """What a stage body gets: the project it runs for, its output folder, the instruments."""

    context: dg.AssetExecutionContext
    project: ProjectSpec
    forms: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def out_dir(self) -> Path:
        return Path(self.project.out_dir)

    @property
    def log(self) -> Any:
        return self.context.log


def instrument_key(form: str) -> dg.AssetKey:
    return dg.AssetKey(f"instrument_{form}")


def project_failure(project: str, exc: Exception) -> dg.Failure:
    """A Failure whose description says which project failed and why (never the token)."""
    return dg.Failure(
        description=f"REDCap project {project!r}: {exc}",
        metadata={"project": project, "error": type(exc).__name__},
        allow_retries=False,
    )


def run_stage(context: dg.AssetExecutionContext, projects: ProjectsResource, forms: list[str],
              body: Callable[[StageRun], dict[str, Any]]) -> dg.MaterializeResult:
    """Run one stage body for the run's project partition, with timing and error naming."""
    started = time.perf_counter()
    name = context.partition_key
    try:
        run = StageRun(context, projects.spec(name), forms)
        metadata = dict(body(run))
    except ImtEtlError as exc:
        raise project_failure(name, exc) from exc
    metadata.setdefault("project", name)
    metadata["duration_s"] = round(time.perf_counter() - started, 3)
    return dg.MaterializeResult(metadata=metadata)


@dataclass(frozen=True)
class StageAsset:
    """A stage body plus its asset attributes; `build` makes the partitioned asset."""

    name: str
    group: str
    description: str
    deps: Sequence[str | dg.AssetKey]
    body: Callable[[StageRun], dict[str, Any]]

    def dep_keys(self, forms: list[str]) -> list[dg.AssetKey]:
        keys: list[dg.AssetKey] = []
        for dep in self.deps:
            if dep == INSTRUMENTS:
                keys.extend(instrument_key(form) for form in forms)
            else:
                keys.append(dep if isinstance(dep, dg.AssetKey) else dg.AssetKey(dep))
        return keys

    def build(self, partitions: dg.PartitionsDefinition, forms: list[str]) -> dg.AssetsDefinition:
        body = self.body

        @dg.asset(name=self.name, group_name=self.group, deps=self.dep_keys(forms),
                  description=self.description, partitions_def=partitions)
        def _stage(context: dg.AssetExecutionContext,
                   projects: ProjectsResource) -> dg.MaterializeResult:
            return run_stage(context, projects, forms, body)

        return _stage


def stage_asset(*, name: str, group: str, description: str,
                deps: Sequence[str | dg.AssetKey] = ()) -> Callable[
                    [Callable[[StageRun], dict[str, Any]]], StageAsset]:
    """Decorator turning `body(run) -> metadata` into a StageAsset (see the module docstring)."""

    def wrap(body: Callable[[StageRun], dict[str, Any]]) -> StageAsset:
        return StageAsset(name, group, description, tuple(deps), body)

    return wrap
