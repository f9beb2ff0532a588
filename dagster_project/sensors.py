"""A sensor that polls each REDCap project cheaply and launches an incremental sync on change.

Per project and tick it asks for record ids created or modified since its watermark
(`dateRangeBegin`) and for deletions in the log since then: two small calls, no record data.

How the cursor advances only after success: the cursor holds, per project, the confirmed
watermark `since` and, while a run is out, a `pending` request (its id, sent as a run tag, and the
watermark taken just before the polling calls that found the change). On each later tick the
sensor looks the run up through the instance by that tag: success moves `since` to the pending
watermark; failure or cancellation drops the request and keeps `since`, so the same changes are
found again and a new run is requested; while the run is queued or running nothing new is
requested for that project. A request no run ever picked up is dropped after PENDING_TIMEOUT_S.
(A run_status_sensor could confirm instead, but it would need its own cursor shared with this one.)
"""

# No `from __future__ import annotations`: Dagster reads the sensor's resource parameters
# from their runtime annotations.

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

from dagster_project.projects import ProjectSpec
from dagster_project.resources import ProjectsResource, RedcapSource
from dagster_project.schedules import AssetJob
from imt_etl.errors import ImtEtlError
from imt_etl.pipeline import state_dir
from imt_etl.redcap.extract import redcap_local
from imt_etl.redcap.sync_state import WATERMARK_FORMAT, load_state

log = logging.getLogger(__name__)

SENSOR_NAME = "redcap_change_sensor"
REQUEST_TAG = "imt-etl/sensor-request"
PENDING_TIMEOUT_S = 3600.0
CURSOR_VERSION = 1
DONE = {dg.DagsterRunStatus.SUCCESS}
GAVE_UP = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dataclass
class ProjectCursor:
    """The confirmed watermark of one project and the request still waiting for its run."""

    since: str | None = None
    pending: dict | None = None  # {"id", "watermark", "requested_at"}


@dataclass
class SensorCursor:
    projects: dict[str, ProjectCursor] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> "SensorCursor":
        if not text:
            return cls()
        data = json.loads(text)
        if data.get("version") != CURSOR_VERSION:
            log.warning("ignoring a sensor cursor of version %r", data.get("version"))
            return cls()
        return cls({name: ProjectCursor(p.get("since"), p.get("pending"))
                    for name, p in data.get("projects", {}).items()})

    def dump(self) -> str:
        return json.dumps({
            "version": CURSOR_VERSION,
            "projects": {name: {"since": p.since, "pending": p.pending}
                         for name, p in sorted(self.projects.items())},
        }, sort_keys=True)


def cursor_for(since: dict[str, datetime]) -> str:
    """A cursor starting each project at a REDCap-local watermark (tests, manual resets)."""
    return SensorCursor({name: ProjectCursor(at.strftime(WATERMARK_FORMAT))
                         for name, at in since.items()}).dump()


def _request_status(instance: dg.DagsterInstance, request_id: str) -> dg.DagsterRunStatus | None:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={REQUEST_TAG: request_id}), limit=1)
    return runs[0].status if runs else None


def _settle_pending(instance: dg.DagsterInstance, name: str, state: ProjectCursor,
                    now: float) -> str | None:
    """Confirm or drop the pending request; returns why to wait, or None to go on polling."""
    pending = state.pending
    if pending is None:
        return None
    status = _request_status(instance, pending["id"])
    if status in DONE:
        state.since, state.pending = pending["watermark"], None
        return None
    if status in GAVE_UP:
        log.info("%s: run of request %s ended %s; changes will be requested again", name,
                 pending["id"], status.value)
        state.pending = None
        return None
    if status is None and now - float(pending["requested_at"]) > PENDING_TIMEOUT_S:
        state.pending = None
        return None
    return f"{name}: waiting for the run of request {pending['id']}"


def _baseline(spec: ProjectSpec) -> str | None:
    """Without a cursor, start from the project's last successful sync, if there is one."""
    saved = load_state(state_dir(spec.out_dir))
    return saved.watermark if saved is not None else None


def _changes(redcap: RedcapSource, spec: ProjectSpec, since: str) -> tuple[int, int]:
    begin = datetime.strptime(since, WATERMARK_FORMAT)
    with redcap.connect(spec) as conn:
        changed = conn.client.record_ids(date_begin=begin)
        deleted = conn.client.deleted_since(begin)
    return len(changed), len(deleted)


def build_change_sensor(job: AssetJob, project_names: list[str],
                        interval_s: int = 300) -> dg.SensorDefinition:
    """The change sensor over the given projects, launching `job` (the incremental sync)."""

    @dg.sensor(
        name=SENSOR_NAME, job=job, minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Polls every project for records created, modified or deleted since the "
        "last confirmed change and launches an incremental sync of that project only when "
        "something changed. Its watermark advances only after the launched run succeeded.",
    )
    def redcap_change_sensor(context: dg.SensorEvaluationContext, projects: ProjectsResource,
                             redcap: RedcapSource) -> dg.SensorResult:
        cursor = SensorCursor.parse(context.cursor)
        requests: list[dg.RunRequest] = []
        notes: list[str] = []
        for name in project_names:
            state = cursor.projects.setdefault(name, ProjectCursor())
            waiting = _settle_pending(context.instance, name, state, time.time())
            if waiting:
                notes.append(waiting)
                continue
            try:
                spec = projects.spec(name)
                if state.since is None:
                    state.since = _baseline(spec)
                # Taken before polling: whatever changes during the calls is seen next time.
                mark = redcap_local(datetime.now(UTC)).strftime(WATERMARK_FORMAT)
                changed, deleted = (1, 0) if state.since is None else _changes(
                    redcap, spec, state.since)
            except ImtEtlError as exc:
                # One unreachable project must not stop the others from being watched.
                context.log.warning("%s: cannot poll REDCap: %s", name, exc)
                notes.append(f"{name}: cannot poll REDCap ({type(exc).__name__})")
                continue
            if not changed and not deleted:
                notes.append(f"{name}: no change since {state.since}")
                continue
            request_id = uuid.uuid4().hex
            state.pending = {"id": request_id, "watermark": mark, "requested_at": time.time()}
            context.log.info("%s: %d changed, %d deleted since %s: requesting a sync", name,
                             changed, deleted, state.since or "never")
            requests.append(dg.RunRequest(
                run_key=request_id, partition_key=name,
                tags={REQUEST_TAG: request_id},
            ))
        return dg.SensorResult(
            run_requests=requests, cursor=cursor.dump(),
            skip_reason=None if requests else dg.SkipReason("; ".join(notes) or "no projects"),
        )

    return redcap_change_sensor
