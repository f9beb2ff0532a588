"""The change sensor: no run without changes, a run after a change or deletion, and its
watermark advances only once the launched run succeeded."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import dagster as dg
import pytest

from dagster_project.definitions import build_definitions
from dagster_project.resources import RedcapResource
from dagster_project.sensors import REQUEST_TAG, SENSOR_NAME, cursor_for


def _tick(built: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None
          ) -> tuple[list[dg.RunRequest], str]:
    sensor = built.resolve_sensor_def(SENSOR_NAME)
    context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                      resources=built.resources, definitions=built)
    result = sensor.evaluate_tick(context)
    return list(result.run_requests or []), result.cursor


def _since(cursor: str) -> str:
    return json.loads(cursor)["projects"]["site-a"]["since"]


def _run(built: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest,
         **kwargs) -> bool:
    """What the daemon would do with the request: run the job with its partition and tags."""
    job = built.resolve_job_def("sync_incremental")
    result = job.execute_in_process(partition_key=request.partition_key, tags=request.tags,
                                    instance=instance, raise_on_error=False, **kwargs)
    return result.success


@pytest.fixture()
def sensor_setup(live_project_file):
    emulator, projects_file = live_project_file
    # Changes are stamped a few seconds in the past so that they fall strictly before the
    # watermark of the tick that finds them (REDCap times have whole seconds).
    emulator.store.clock = lambda: datetime.now() - timedelta(seconds=3)
    built = build_definitions(str(projects_file), ["enrollment"])
    return emulator, built, dg.DagsterInstance.ephemeral()


def test_no_run_when_nothing_changed(sensor_setup):
    _, built, instance = sensor_setup
    start = cursor_for({"site-a": datetime.now() - timedelta(days=1)})
    requests, cursor = _tick(built, instance, start)
    assert requests == []
    assert _since(cursor) == _since(start)


def test_modification_launches_a_run_and_the_cursor_waits_for_its_success(sensor_setup):
    emulator, built, instance = sensor_setup
    start = cursor_for({"site-a": datetime.now() - timedelta(days=1)})
    emulator.store.set_values("002", {"mip_kh2_best": "99"}, event="baseline_arm_1")

    requests, cursor = _tick(built, instance, start)
    assert [r.partition_key for r in requests] == ["site-a"]
    assert _since(cursor) == _since(start)  # not yet: the run has not happened
    # While the run is outstanding, no second request and no advance.
    again, cursor = _tick(built, instance, cursor)
    assert again == [] and _since(cursor) == _since(start)

    assert _run(built, instance, requests[0])
    after, cursor = _tick(built, instance, cursor)
    assert after == []  # the change is behind the new watermark
    assert _since(cursor) > _since(start)
    assert json.loads(cursor)["projects"]["site-a"]["pending"] is None


def test_deletion_launches_a_run_and_a_failed_run_does_not_advance_the_cursor(sensor_setup):
    emulator, built, instance = sensor_setup
    start = cursor_for({"site-a": datetime.now() - timedelta(hours=1)})
    emulator.store.delete_records(["005"])
    requests, cursor = _tick(built, instance, start)
    assert len(requests) == 1 and requests[0].tags[REQUEST_TAG]

    # The run fails (REDCap rejects the token): the watermark stays, the change is requested again.
    bad = RedcapResource(url=emulator.url, token="0" * 32)
    assert not _run(built, instance, requests[0], resources={"redcap": bad})
    retry, cursor = _tick(built, instance, cursor)
    assert _since(cursor) == _since(start)
    assert len(retry) == 1 and retry[0].run_key != requests[0].run_key

    assert _run(built, instance, retry[0])
    quiet, cursor = _tick(built, instance, cursor)
    assert quiet == [] and _since(cursor) > _since(start)


def test_first_tick_without_cursor_or_previous_sync_requests_a_sync(sensor_setup):
    _, built, instance = sensor_setup
    requests, cursor = _tick(built, instance, None)
    assert [r.partition_key for r in requests] == ["site-a"]
    assert json.loads(cursor)["projects"]["site-a"]["pending"]["id"] == requests[0].run_key
