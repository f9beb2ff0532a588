"""RedcapClient over mocked HTTP: error mapping, retries, token hygiene, what is sent."""

from __future__ import annotations

import logging
import traceback
from datetime import datetime
from urllib.parse import parse_qs

import pytest
import requests
import responses

from imt_etl.errors import ConfigError, RedcapAuthError, RedcapError
from imt_etl.redcap.client import (
    RedcapClient,
    _decode_with_orjson,
    deleted_record_id,
    parse_retry_after,
    server_error_text,
)

URL = "https://redcap.example.org/api/"
TOKEN = "0123456789ABCDEF0123456789ABCDEF"
META = [
    {"field_name": "record_id", "form_name": "enrolment", "field_type": "text"},
    {"field_name": "age", "form_name": "enrolment", "field_type": "text"},
]


def client(**kw) -> RedcapClient:
    kw.setdefault("max_retries", 4)
    return RedcapClient(URL, TOKEN, sleep=lambda s: None, **kw)


def form(call) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(call.request.body).items()}


def full_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


@responses.activate
@pytest.mark.parametrize(
    "failure",
    [
        {"status": 500, "json": {"error": "server exploded"}},
        {"status": 503, "body": "unavailable", "headers": {"Retry-After": "0"}},
        {"status": 429, "json": {"error": "rate limited"}},
        {"status": 504, "body": "<html>gateway timeout</html>"},
        {"body": requests.exceptions.ReadTimeout("read timed out")},
        {"body": requests.exceptions.ConnectionError("Connection reset by peer")},
        {"status": 200, "body": '[{"field_name": "record_id", "form_na'},
    ],
)
def test_transient_failures_are_retried_then_succeed(failure):
    responses.post(URL, **failure)
    responses.post(URL, **failure)
    responses.post(URL, json=META)
    assert client().metadata() == META
    assert len(responses.calls) == 3


@responses.activate
def test_retry_after_is_passed_to_the_backoff():
    responses.post(URL, status=429, json={"error": "slow"}, headers={"Retry-After": "12"})
    responses.post(URL, json=META)
    sleeps: list[float] = []
    RedcapClient(URL, TOKEN, sleep=sleeps.append).metadata()
    assert sleeps == [12.0]


@responses.activate
def test_gives_up_after_max_retries():
    for _ in range(5):
        responses.post(URL, status=502, body="bad gateway")
    with pytest.raises(RedcapError) as info:
        client(max_retries=2).metadata()
    assert info.value.retryable and info.value.status == 502
    assert len(responses.calls) == 3


@responses.activate
def test_403_fails_at_once_without_the_token():
    # A server that echoes the token must not get it into our message or traceback.
    responses.post(URL, status=403, json={"error": f"bad token {TOKEN}"})
    with pytest.raises(RedcapAuthError) as info:
        client().metadata()
    assert len(responses.calls) == 1
    assert info.value.status == 403 and not info.value.retryable
    assert TOKEN not in full_text(info.value)
    assert "bad token" in str(info.value)


@responses.activate
def test_401_is_an_auth_error():
    responses.post(URL, status=401, body="Unauthorized")
    with pytest.raises(RedcapAuthError):
        client().project_info()
    assert len(responses.calls) == 1


@responses.activate
def test_error_body_with_status_200_is_detected():
    responses.post(URL, status=200, json={"error": "The field 'nope' does not exist"})
    with pytest.raises(RedcapError) as info:
        client().metadata()
    assert not info.value.retryable and "does not exist" in str(info.value)
    assert len(responses.calls) == 1


@responses.activate
def test_other_4xx_is_not_retried_and_carries_server_text():
    responses.post(URL, json=META)
    responses.post(URL, status=400, json={"error": "Invalid event 'x_arm_1'"})
    with pytest.raises(RedcapError) as info:
        client().export_batch(["1"], fields=["record_id"])
    assert info.value.status == 400 and not info.value.retryable
    assert "Invalid event 'x_arm_1'" in str(info.value)
    assert len(responses.calls) == 2


@responses.activate
def test_connection_error_text_is_scrubbed_and_not_chained():
    responses.post(URL, body=requests.exceptions.ConnectionError(f"failed sending token={TOKEN}"))
    with pytest.raises(RedcapError) as info:
        client(max_retries=0).metadata()
    assert info.value.retryable
    assert TOKEN not in full_text(info.value)


@responses.activate
def test_retry_log_lines_have_no_token(caplog):
    responses.post(URL, status=500, json={"error": f"oops {TOKEN}"})
    responses.post(URL, json=META)
    with caplog.at_level(logging.DEBUG):
        client().metadata()
    assert "retry 1" in caplog.text and TOKEN not in caplog.text


@responses.activate
def test_redirects_are_not_followed():
    responses.post(URL, status=307, headers={"Location": "https://evil.example/api/"})
    with pytest.raises(RedcapError, match="redirected"):
        client().metadata()
    assert len(responses.calls) == 1


@responses.activate
def test_classic_project_form_event_mapping_is_empty():
    responses.post(
        URL, status=400,
        json={"error": "You cannot export form/event mappings for classic projects"},
    )
    assert client().form_event_mapping() == []
    assert len(responses.calls) == 1


@responses.activate
def test_record_ids_asks_only_for_the_id_field_and_dedupes():
    responses.post(URL, json=META)
    rows = [{"record_id": r, "redcap_event_name": e} for r, e in
            [("1", "a"), ("1", "b"), ("10", "a"), ("2", "a"), ("10", "b")]]
    responses.post(URL, json=rows)
    ids = client().record_ids(date_begin=datetime(2024, 5, 1, 8, 30))
    assert ids == ["1", "10", "2"]
    sent = form(responses.calls[1])
    assert sent["content"] == "record" and sent["format"] == "json"
    assert sent["fields[0]"] == "record_id" and "fields[1]" not in sent
    assert sent["dateRangeBegin"] == "2024-05-01 08:30:00"
    assert sent["token"] == TOKEN  # the token goes in the body, never the URL
    assert TOKEN not in responses.calls[1].request.url


@responses.activate
def test_export_batch_sends_records_and_returns_strings():
    responses.post(URL, json=META)
    responses.post(URL, json=[{"record_id": "001", "age": 42, "note": None}])
    rows = client().export_batch(["001", "7"], fields=["record_id", "age", "note"])
    assert rows == [{"record_id": "001", "age": "42", "note": ""}]
    assert len(responses.calls) == 2  # the dictionary once, then the batch
    sent = form(responses.calls[1])
    assert (sent["records[0]"], sent["records[1]"]) == ("001", "7")
    assert sent["rawOrLabel"] == "raw" and sent["type"] == "flat"
    assert sent["exportBlankForGrayFormStatus"] == "True"


@responses.activate
@pytest.mark.parametrize("charset", ["utf-8", "latin-1"])
def test_export_batch_decodes_accents_in_either_charset(charset):
    """orjson reads UTF-8 bodies; a body in another charset goes to requests' decoder."""
    responses.post(URL, json=META)
    body = '[{"record_id": "001", "age": "\u00e9t\u00e9"}]'
    responses.post(URL, body=body.encode(charset),
                   content_type=f"application/json; charset={charset}")
    assert client().export_batch(["001"]) == [{"record_id": "001", "age": "\u00e9t\u00e9"}]


def test_a_fast_json_response_is_freed_without_the_garbage_collector():
    """An export's body must go when its batch is done, not wait for a (rare) collection."""
    import gc
    import weakref

    response = requests.Response()
    response.status_code, response._content = 200, b'[{"a": "1"}]'
    _decode_with_orjson(response)
    assert response.json() == [{"a": "1"}]
    freed = weakref.ref(response)
    gc.disable()
    try:
        del response
        assert freed() is None
    finally:
        gc.enable()


@responses.activate
def test_export_batch_of_nothing_makes_no_call():
    assert client().export_batch([]) == []
    assert len(responses.calls) == 0


@responses.activate
def test_unexpected_shape_is_an_error():
    responses.post(URL, json={"not": "a list"})
    with pytest.raises(RedcapError, match="expected a JSON list"):
        client().metadata()


@responses.activate
def test_deleted_since_reads_the_log():
    responses.post(URL, json=META)
    responses.post(URL, json=[
        {"timestamp": "2024-05-02 10:00", "username": "u", "action": "Deleted Record 5",
         "details": "record_id = '5'", "record": "5"},
        {"timestamp": "2024-05-02 10:01", "username": "u", "action": "Deleted Record 7 (API)",
         "details": ""},
        {"timestamp": "2024-05-02 10:02", "username": "u", "action": "Delete record",
         "details": "record_id = 'A-9'"},
        {"timestamp": "2024-05-02 10:03", "username": "u", "action": "Deleted Record 5",
         "details": "", "record": "5"},
    ])
    c = client()
    c.metadata()
    assert c.deleted_since(datetime(2024, 5, 1)) == ["5", "7", "A-9"]
    sent = form(responses.calls[1])
    assert sent["content"] == "log" and sent["logtype"] == "record_delete"
    assert sent["beginTime"] == "2024-05-01 00:00:00"


def test_deleted_record_id_without_any_id():
    assert deleted_record_id({"action": "Manage/Design", "details": ""}) is None


def test_url_and_token_validation(caplog):
    with pytest.raises(ConfigError, match="/api/"):
        RedcapClient("https://redcap.example.org/api", TOKEN)
    with pytest.raises(ConfigError, match="not https"):
        RedcapClient("http://redcap.example.org/api/", TOKEN)
    with pytest.raises(ConfigError) as info:
        RedcapClient(URL, TOKEN[:-1] + "!")
    assert TOKEN[:-1] not in str(info.value)
    with pytest.raises(ConfigError):
        RedcapClient(URL, TOKEN + "0")
    RedcapClient("http://127.0.0.1:8080/api/", TOKEN)
    RedcapClient("http://localhost:8080/api/", TOKEN)
    RedcapClient("http://[::1]:8080/api/", TOKEN)
    with caplog.at_level(logging.WARNING):
        RedcapClient("http://redcap.example.org/api/", TOKEN, allow_insecure=True)
    assert "unencrypted" in caplog.text
    assert TOKEN not in repr(client())


def test_helpers():
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("soon") is None
    when = datetime(2024, 1, 1, 0, 0, 10).astimezone()
    assert parse_retry_after("Mon, 01 Jan 2024 00:00:00 GMT", now=when) == 0.0
    assert server_error_text('{"error": "x"}') == "x"
    assert server_error_text("<hash><error>bad</error></hash>") == "bad"
    assert server_error_text("") == "(empty response body)"
