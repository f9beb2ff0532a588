"""The bad-input corpus (cases.yaml): every malformed input ends in a clear CLI error or in a
quarantine/warning row with its reason. Nothing crashes, nothing is silently dropped.

Each case breaks one thing in an otherwise good input, runs the real `imt-etl` command line
in-process (real emulator over HTTP for syncs) and checks the outcome the case states.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

import imt_etl.studies.imt as imt_study
from imt_etl import cli
from imt_etl.config import MAPPINGS_ROOT, SCHEMAS_ROOT
from imt_etl.redcap.emulator import RedcapEmulator, new_token
from imt_etl.redcap.project_xml import write_project_xml

HERE = Path(__file__).parent
CASES = yaml.safe_load((HERE / "cases.yaml").read_text(encoding="utf-8"))
TARGETS = {"project_xml", "dictionary_csv", "records", "served_metadata", "mapping", "rules",
           "settings", "cli"}


@pytest.fixture(scope="module")
def base_project():
    """A 4-participant project from the reference generator (its own planted errors included)."""
    from imt_etl.studies.imt.generator import generate_project

    return generate_project(n_participants=4, seed=2024)


@pytest.fixture(scope="module")
def base_xml(base_project) -> str:
    return write_project_xml(base_project).decode("utf-8")


@pytest.fixture(scope="module")
def token() -> str:
    return new_token()


def test_the_corpus_is_big_and_well_formed():
    ids = [case["id"] for case in CASES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)
    for case in CASES:
        assert case["target"] in TARGETS, case["id"]
        assert case.get("about"), f"{case['id']}: say what is broken"
        expect = case["expect"]
        assert len({"error", "findings", "written"} & set(expect)) == 1, case["id"]
    targets = {case["target"] for case in CASES}
    assert targets == TARGETS  # every kind of input is covered


# ------------------------------------------------------------------ breaking an input


def mutate(text: str, how: dict) -> str:
    """Apply a case's `change` to a text; a replace whose text is absent is a broken case."""
    if "content" in how:
        return how["content"]
    for old, new in how.get("replace", []):
        assert old in text, f"the case's text to replace is not in the input: {old!r}"
        text = text.replace(old, new, how.get("count", -1))
    if "truncate" in how:
        text = text[: int(len(text) * how["truncate"])]
    return text + how.get("append", "")


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def emulator_over(project, token: str) -> RedcapEmulator:
    loaded = datetime.now() - timedelta(days=30)
    return RedcapEmulator(project, token=token, load_time=loaded)


def edit_records(project, edits: list[dict]) -> None:
    """Set values in rows of the served project."""
    for edit in edits:
        matches = [row for row in project.rows
                   if row.record == str(edit["record"]) and row.event == edit.get("event", "")
                   and row.repeat_instrument == edit.get("repeat_instrument", "")
                   and row.repeat_instance == edit.get("instance")]
        assert matches, f"no row for {edit}"
        matches[0].values.update({k: expand(v) for k, v in edit.get("values", {}).items()})


LONG_NOTE = "Very long note. " * 6250  # 100,000 characters


def expand(value: object) -> str:
    return LONG_NOTE if value == "{long}" else str(value)


def edit_metadata(project, edits: list[dict]) -> None:
    fields = list(project.dictionary.fields)
    for edit in edits:
        index = next(i for i, f in enumerate(fields) if f.name == edit["field"])
        fields[index] = dataclasses.replace(fields[index], **edit["set"])
    project.dictionary = dataclasses.replace(project.dictionary, fields=tuple(fields))


def copy_tree_with_change(source: Path, tmp: Path, case: dict) -> Path:
    root = tmp / source.name
    shutil.copytree(source, root)
    target = root / case["file"]
    target.write_text(mutate(target.read_text(encoding="utf-8"), case["change"]),
                      encoding="utf-8")
    return root


def shares_sync(case: dict) -> bool:
    return case["target"] == "records" or (case["target"] == "served_metadata"
                                           and "findings" in case["expect"])


@pytest.fixture(scope="module")
def shared_sync(base_project, token, tmp_path_factory):
    """One sync over the base project with every sharing case's edits applied."""
    project = copy.deepcopy(base_project)
    for case in CASES:
        if case["target"] == "records":
            edit_records(project, case["edits"])
        elif shares_sync(case):
            edit_metadata(project, case["edits"])
    out = tmp_path_factory.mktemp("shared") / "out"
    with pytest.MonkeyPatch.context() as patch, emulator_over(project, token) as server:
        patch.setenv("REDCAP_API_TOKEN", token)
        code = cli.main(["sync", "--url", server.url, "--out", str(out), "--quiet"])
    return code, out


def run_case(case: dict, base_project, base_xml: str, token: str, tmp_path: Path, capsys,
             monkeypatch) -> tuple[int, str, str, Path]:
    monkeypatch.setenv("REDCAP_API_TOKEN", token)
    for name, value in case.get("env", {}).items():
        monkeypatch.setenv(name, str(value))
    out = tmp_path / "out"
    target = case["target"]
    if target == "project_xml":
        path = tmp_path / "project.xml"
        path.write_text(mutate(base_xml, case["change"]), encoding="utf-8")
        return (*run_cli(["questionnaire", "--project", path, "--write", tmp_path / "q"],
                         capsys), out)
    if target == "dictionary_csv":
        path = tmp_path / "data_dictionary.csv"
        original = (Path(imt_study.__file__).parent / "data_dictionary.csv").read_text("utf-8")
        path.write_text(mutate(original, case["change"]), encoding="utf-8")
        return (*run_cli(["questionnaire", "--dictionary", path, "--write", tmp_path / "q"],
                         capsys), out)
    project = copy.deepcopy(base_project)
    extra: list = []
    if target == "records":
        edit_records(project, case["edits"])
    elif target == "served_metadata":
        edit_metadata(project, case["edits"])
    elif target == "mapping":
        extra = ["--mappings", copy_tree_with_change(MAPPINGS_ROOT, tmp_path, case)]
    elif target == "rules":
        extra = ["--schemas", copy_tree_with_change(SCHEMAS_ROOT, tmp_path, case)]
    with emulator_over(project, token) as server:
        if target == "settings":
            path = tmp_path / "settings.yaml"
            path.write_text(mutate(f"url: {server.url}\n", case["change"]), encoding="utf-8")
            extra = ["--config", path]
            argv = ["sync", "--out", out, *extra, *case.get("args", [])]
        elif target == "cli":
            a_file = tmp_path / "a-file"
            a_file.write_text("not a folder\n")
            argv = [str(a).replace("{url}", server.url).replace("{file}", str(a_file))
                    for a in case["args"]]
            if "--out" not in argv:
                argv += ["--out", out]
        else:
            argv = ["sync", "--url", server.url, "--out", out, *extra]
        return (*run_cli(argv, capsys), out)


def check_error(case: dict, code: int, err: str) -> None:
    expect = case["expect"]
    assert code == expect["exit"], err
    assert "Traceback" not in err and "internal error" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("imt-etl: error: ")]
    assert len(errors) == 1, err  # one paragraph: one line, after whatever was logged
    for needle in expect["error"]:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"


def check_written(case: dict, code: int, err: str, folder: Path) -> None:
    """Odd but legal input: the command succeeds and its output keeps the text as it was."""
    assert code == 0, err
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.json")))
    for needle in case["expect"]["written"]:  # as written, or JSON-escaped (\u2014)
        assert needle in text or json.dumps(needle)[1:-1] in text, needle
    for needle in case["expect"].get("absent", []):
        assert needle not in text and json.dumps(needle)[1:-1] not in text, needle


def check_findings(case: dict, code: int, err: str, out: Path) -> None:
    expect = case["expect"]
    assert code == expect.get("exit", 0), err
    assert "Traceback" not in err, err
    findings = pd.read_parquet(out / "quality" / "findings.parquet")
    for wanted in expect["findings"]:
        rows = findings
        for column, value in wanted.items():
            if column == "message":
                rows = rows[rows["message"].str.contains(value, regex=False)]
            else:
                rows = rows[rows[column].astype("string") == str(value)]
        assert len(rows) >= 1, f"no finding {wanted}: {findings.to_dict('records')}"
    # Nothing silently dropped: every extracted row is valid or quarantined.
    if not expect["findings"]:  # the edited values pass as they are, into the tables
        for edit in case["edits"]:
            for field, value in edit["values"].items():
                assert not len(findings[(findings["field"] == field)
                                        & (findings["record_id"] == edit["record"])])
                assert value_in_tables(out, field, expand(value))
    summary = json.loads((out / "run-summary.json").read_text())
    for form, counts in summary["instruments"].items():
        assert counts["rows_extracted"] == counts["rows_valid"] + counts["rows_quarantined"], form


def value_in_tables(out: Path, column: str, value: str) -> bool:
    for path in (out / "parquet").rglob("*.parquet"):
        frame = pd.read_parquet(path)
        if column in frame.columns and (frame[column].astype("string") == value).any():
            return True
    return False


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(case, base_project, base_xml, token, tmp_path, capsys, monkeypatch, request):
    if shares_sync(case):
        code, out = request.getfixturevalue("shared_sync")
        err = capsys.readouterr().err
    else:
        code, _, err, out = run_case(case, base_project, base_xml, token, tmp_path, capsys,
                                     monkeypatch)
    if "error" in case["expect"]:
        check_error(case, code, err)
    elif "written" in case["expect"]:
        check_written(case, code, err, tmp_path / "q")
    else:
        check_findings(case, code, err, out)
