"""Sync settings: file, then environment, then CLI; the token never from a file."""

import pytest

from imt_etl import cli
from imt_etl.config import TOKEN_ENV
from imt_etl.errors import ConfigError
from imt_etl.settings_file import merged_settings, read_settings_file


def write(tmp_path, text):
    path = tmp_path / "imt-etl.yaml"
    path.write_text(text)
    return path


def test_precedence_file_then_environment_then_cli(tmp_path):
    path = write(tmp_path, "url: https://a.example/api/\nbatch_size: 10\nstudy: imt\n")
    env = {"IMT_ETL_BATCH_SIZE": "20", "IMT_ETL_STUDY": "adl"}
    merged = merged_settings(path, {"batch_size": 30, "study": None}, env)
    assert merged == {"url": "https://a.example/api/", "batch_size": 30, "study": "adl"}


@pytest.mark.parametrize(("text", "fragment"), [
    ("token: abc\n", "secrets are read only from the environment"),
    ("urll: x\n", "key 'urll': unknown"),
    ("batch_size: many\n", "key 'batch_size': expected int"),
    ("- a\n- b\n", "expected a mapping"),
    ("url: [unclosed\n", "not valid YAML"),
])
def test_bad_settings_files_name_the_key(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        read_settings_file(write(tmp_path, text))


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="IMT_ETL_BATCH_SIZE"):
        merged_settings(None, {}, {"IMT_ETL_BATCH_SIZE": "ten"})


def test_sync_reads_the_url_from_the_settings_file(capsys, monkeypatch, tmp_path, live_small):
    emulator, token = live_small
    monkeypatch.setenv(TOKEN_ENV, token)
    # 12 records in batches of 5 (the file's, not the default 50): 3 batches.
    path = write(tmp_path, f"url: {emulator.url}\nout: {tmp_path / 'o'}\nbatch_size: 5\n")
    assert cli.main(["sync", "--config", str(path), "--json"]) == 0
    assert '"batches": 3' in capsys.readouterr().out
    assert (tmp_path / "o" / "run-summary.json").is_file()


def test_sync_without_any_url_is_a_configuration_error(capsys, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "A" * 32)
    monkeypatch.delenv("IMT_ETL_REDCAP_URL", raising=False)
    assert cli.main(["sync"]) == 2
    assert "no REDCap URL" in capsys.readouterr().err
