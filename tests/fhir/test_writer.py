"""The spooled writer (batch by batch, sorted runs merged on disk) writes the same bytes as the
whole-list writers, finds the same DELETEs and amendments, and keeps one temp file at a time."""

from __future__ import annotations

import random

import orjson
import pytest

from imt_etl.fhir.amend import AmendStream, mark_amended, previous_observations
from imt_etl.fhir.bundles import deletions_between, type_rank, write_bundles
from imt_etl.fhir.ndjson import read_ids, write_ndjson
from imt_etl.fhir.spool import Spool
from imt_etl.fhir.writer import write_spooled
from tests.fhir.fhir_samples import study_resources


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _spooled(resources, tmp_path, name, batch=7, **kwargs):
    shuffled = list(resources)
    random.Random(len(shuffled)).shuffle(shuffled)
    out = tmp_path / name
    with Spool(tmp_path / f"{name}-spool") as spool:
        for start in range(0, len(shuffled), batch):
            spool.add(shuffled[start:start + batch])
        written = write_spooled(spool, out, **kwargs)
    return out, written


@pytest.mark.parametrize("bundle_size", [1, 4, 500])
def test_same_bytes_as_the_whole_list_writers(tmp_path, bundle_size):
    resources = study_resources(records=5, observations=4)
    expected = tmp_path / "expected"
    write_ndjson(resources, expected)
    write_bundles(resources, expected / "bundles", bundle_size=bundle_size)
    got, written = _spooled(resources, tmp_path, "got", bundle_size=bundle_size)
    assert _files(got) == _files(expected)
    assert written.counts == {k: len(v) for k, v in read_ids(expected).items()}


@pytest.mark.parametrize("chunk", [1024, 2, 1])
def test_deletions_and_stale_files_match(tmp_path, monkeypatch, chunk):
    # The writer handles ids a chunk at a time: small chunks put every boundary to the test.
    monkeypatch.setattr("imt_etl.fhir.writer._CHUNK", chunk)
    first = study_resources(records=5, observations=3)
    second = study_resources(records=3, observations=2)  # records 4-5 and some obs vanish
    previous = read_ids_after(first, tmp_path / "prev")
    expected = tmp_path / "expected"
    write_ndjson(first, expected)
    write_bundles(first, expected / "bundles", bundle_size=3)
    gone = deletions_between(previous, second)
    write_ndjson(second, expected)
    write_bundles(second, expected / "bundles", bundle_size=3, deletions=gone)
    ordered = sorted(((t, i) for t, v in previous.items() for i in v),
                     key=lambda d: (type_rank(d[0]), d[1]))
    got = tmp_path / "got"
    _spooled(first, tmp_path, "got", bundle_size=3)
    ids_out = tmp_path / "ids.txt"
    _, written = _spooled(second, tmp_path, "got", bundle_size=3, previous_ids=ordered,
                          ids_out=ids_out)
    assert written.deletions == len(gone) > 0
    assert _files(got) == _files(expected)
    listed = [line.split("\t") for line in ids_out.read_text().splitlines()]
    assert {tag for _, _, tag in listed} == {"-"}  # added without a batch tag
    assert [(t, i) for t, i, _ in listed] == sorted(
        ((r["resourceType"], r["id"]) for r in second), key=lambda d: (type_rank(d[0]), d[1]))


def read_ids_after(resources, folder):
    write_ndjson(resources, folder)
    return read_ids(folder)


def test_a_duplicate_id_across_batches_is_refused(tmp_path):
    resources = study_resources(records=2)
    with Spool(tmp_path / "spool") as spool:
        spool.add(resources)
        spool.add(resources[-1:])
        with pytest.raises(ValueError, match="duplicate resource id"):
            write_spooled(spool, tmp_path / "out", bundle_size=10)


def _obs(oid, value, status="final"):
    return {"resourceType": "Observation", "id": oid, "status": status,
            "valueQuantity": {"value": value}}


def test_amend_stream_agrees_with_mark_amended(tmp_path):
    before = [_obs("a", 1), _obs("b", 2), _obs("d", 5, "amended"), _obs("e", 6)]
    (tmp_path / "Observation.ndjson").write_bytes(
        b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in before))
    current = [_obs("a", 1), _obs("b", 3), _obs("c", 4), _obs("d", 5), _obs("f", 7)]
    stream = AmendStream(tmp_path / "Observation.ndjson")
    lines = [stream(r["id"].encode(), orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n")
             for r in current]
    expected = [dict(r) for r in current]
    count = mark_amended(expected, previous_observations(tmp_path))
    assert stream.count == count == 2
    assert [orjson.loads(line) for line in lines] == expected


@pytest.mark.parametrize("size", [1, 3, 1024])
def test_amend_stream_chunks_agree_with_one_line_at_a_time(tmp_path, size):
    before = [_obs(f"o{i:05d}", i) for i in range(0, 3000, 1)]
    (tmp_path / "Observation.ndjson").write_bytes(
        b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in before))
    current = [_obs(r["id"], r["valueQuantity"]["value"] + (i % 700 == 5)) for i, r in
               enumerate(before) if i % 997 != 1] + [_obs("p00000", 1)]
    rids = [r["id"].encode() for r in current]
    lines = [orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in current]
    one = AmendStream(tmp_path / "Observation.ndjson")
    expected = [one(rid, line) for rid, line in zip(rids, lines, strict=True)]
    chunked = AmendStream(tmp_path / "Observation.ndjson")
    got = [line for start in range(0, len(lines), size)
           for line in chunked.chunk(rids[start:start + size], lines[start:start + size])]
    assert got == expected and chunked.count == one.count == 5
