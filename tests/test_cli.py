"""The command line: demo end to end, error paths with exit codes and no tracebacks or tokens."""

from __future__ import annotations

import json

import pytest

from imt_etl import cli
from imt_etl.config import TOKEN_ENV


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_writes_tables_and_a_json_summary(demo_runs):
    # The session's demo runs (tests/conftest.py): the first, into an empty folder, had --json.
    out_dir, _, _, printed = demo_runs
    code, out = printed["json"]
    assert code == 0
    summary = json.loads(out)
    assert summary["records"] == 33 and summary["status"] == "success"
    assert summary["instruments"]["enrollment"]["rows_extracted"] == 33
    assert len(list((out_dir / "parquet" / "instruments").glob("*.parquet"))) == 13


def test_demo_prints_a_summary_table(demo_printed):
    code, out = demo_printed["table"]
    assert code == 0
    assert "training_diary" in out and "records: 33" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert "imt-etl 0.1.0" in capsys.readouterr().out


def test_sync_without_token_is_a_configuration_error(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    code, _, err = run_cli(capsys, "sync", "--url", "https://redcap.example.org/api/",
                           "--out", str(tmp_path))
    assert code == 2
    assert TOKEN_ENV in err and "Traceback" not in err


def test_sync_with_a_bad_url_names_the_problem(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(TOKEN_ENV, "A" * 32)
    code, _, err = run_cli(capsys, "sync", "--url", "https://redcap.example.org/",
                           "--out", str(tmp_path))
    assert code == 2 and "/api/" in err and "A" * 32 not in err


def test_sync_with_a_rejected_token_exits_3_without_leaking_it(capsys, monkeypatch, tmp_path,
                                                               live_small):
    emulator, _ = live_small
    wrong = "B" * 32
    monkeypatch.setenv(TOKEN_ENV, wrong)
    code, out, err = run_cli(capsys, "sync", "--url", emulator.url, "--out", str(tmp_path))
    assert code == 3
    assert "permission" in err.lower() and wrong not in out + err and "Traceback" not in err
    assert not (tmp_path / "state" / "sync-state.json").exists()


def test_sync_then_incremental_against_the_emulator(capsys, monkeypatch, tmp_path,
                                                    live_small):
    emulator, token = live_small
    monkeypatch.setenv(TOKEN_ENV, token)
    base = ["sync", "--url", emulator.url, "--out", str(tmp_path), "--json"]
    code, out, _ = run_cli(capsys, *base)
    assert code == 0 and json.loads(out)["mode"] == "full"
    emulator.store.delete_records(["003"])
    code, out, _ = run_cli(capsys, *base, "--incremental")
    summary = json.loads(out)
    assert code == 0 and summary["mode"] == "incremental" and summary["records_deleted"] == 1


def test_emulator_refuses_a_missing_project_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "redcap-emulator", "--project", str(tmp_path / "no.xml"))
    assert code == 2 and "no such file" in err
