"""One `imt-etl demo` folder shared by the output tests (the files a new user would get).

The demo runs twice into the same folder, as a nightly job would with unchanged data; the
first run's FHIR and parquet bytes are kept to prove the second changes nothing.
"""

from __future__ import annotations

import pytest

from imt_etl import cli


def _files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for pattern in ("fhir/**/*.ndjson", "fhir/bundles/*.json", "parquet/**/*.parquet")
            for p in sorted(out.glob(pattern))}


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert cli.main(["demo", "--out", str(out), "--quiet"]) == 0
    first = _files(out)
    assert cli.main(["demo", "--out", str(out), "--quiet"]) == 0
    return out, first, _files(out)


@pytest.fixture(scope="session")
def demo_out(demo_runs):
    return demo_runs[0]
