"""What each `imt-etl` subcommand does; cli.py parses arguments and maps errors to exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from imt_etl import pipeline
from imt_etl.config import MAPPINGS_ROOT, SCHEMAS_ROOT, Settings, token_from_env
from imt_etl.errors import ConfigError
from imt_etl.privacy import key_from_env
from imt_etl.progress import ProgressPrinter
from imt_etl.summary import RunSummary

log = logging.getLogger(__name__)


def demo(args: argparse.Namespace) -> dict[str, Any]:
    from imt_etl.demo import emulated_project
    from imt_etl.studies import bundled_project_path

    study = getattr(args, "study", "imt")
    with emulated_project(bundled_project_path(study)) as (url, token):
        settings = Settings(redcap_url=url, token=token, out_dir=args.out, study=study,
                            project_name=f"{study}-demo", batch_size=args.batch_size,
                            pseudonym_key=_demo_key())
        return _run_and_report(settings, args, incremental=False, title="imt-etl demo")


def _demo_key() -> bytes:
    """The configured pseudonym key, else (synthetic data only) the published demo key."""
    import os

    from imt_etl.privacy import DEMO_KEY, KEY_ENV

    return key_from_env() if os.environ.get(KEY_ENV, "").strip() else DEMO_KEY


def sync(args: argparse.Namespace) -> dict[str, Any]:
    from imt_etl.settings_file import merged_settings

    given = merged_settings(args.config, {
        "url": args.url, "project_name": args.project_name, "study": args.study,
        "out": str(args.out) if args.out is not None else None, "batch_size": args.batch_size,
        "mappings": _opt_str(args.mappings), "schemas": _opt_str(args.schemas),
        "workers": args.workers,
    })
    if not given.get("url"):
        raise ConfigError("no REDCap URL: give --url, IMT_ETL_REDCAP_URL or `url` in --config")
    args.out = Path(given.get("out", "out"))
    settings = Settings(
        redcap_url=given["url"], token=token_from_env(), out_dir=args.out,
        project_name=given.get("project_name", "redcap"), batch_size=given.get("batch_size", 50),
        verify_tls=not args.insecure, study=given.get("study", "imt"),
        pseudonym_key=key_from_env(),
        mappings_root=Path(given.get("mappings", MAPPINGS_ROOT)),
        schemas_root=Path(given.get("schemas", SCHEMAS_ROOT)),
        workers=given.get("workers", 0),
    )
    return _run_and_report(settings, args, incremental=args.incremental, title="imt-etl sync")


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def redcap_emulator(args: argparse.Namespace) -> None:
    from imt_etl.redcap.emulator import cli_token, run_emulator_cli

    token = cli_token(args.token)
    if args.project is not None and not Path(args.project).is_file():
        raise ConfigError(f"--project {args.project}: no such file")
    project = args.project
    if project is None:
        from imt_etl.studies.imt import reference_project_path

        project = reference_project_path()
    print(f"REDCap emulator serving {project} at http://{args.host}:{args.port}/api/ "
          "(Ctrl-C stops it)", file=sys.stderr)
    run_emulator_cli(Path(project), args.host, args.port, token,
                     faults=args.faults, allow_remote=args.allow_remote)


def _run_and_report(settings: Settings, args: argparse.Namespace, *, incremental: bool,
                    title: str) -> dict[str, Any]:
    quiet = args.quiet or args.json
    printer = ProgressPrinter(enabled=not quiet)
    with printer:
        summary = pipeline.run(settings, incremental=incremental, progress=printer.update)
    if not quiet:
        print_summary(summary, Path(settings.out_dir), title)
    return summary.to_dict()


def print_summary(summary: RunSummary, out_dir: Path, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{title}: {summary.mode} sync of {summary.project}", title_justify="left")
    for name in ("instrument", "rows", "valid", "quarantined", "warnings"):
        table.add_column(name, justify="left" if name == "instrument" else "right")
    for form, counts in summary.instruments.items():
        table.add_row(form, *(_count(v) for v in (counts.rows_extracted, counts.rows_valid,
                                                  counts.rows_quarantined, counts.warnings)))
    console.print(table)
    console.print(
        f"records: {summary.records} ({summary.records_changed} exported, "
        f"{summary.records_deleted} deleted) in {summary.batches} batches"
    )
    fhir = summary.stages.get("fhir", {}).get("resources")
    if fhir:
        console.print("FHIR: " + ", ".join(f"{n} {kind}" for kind, n in fhir.items()))
    console.print(f"{len(summary.files_written)} files written under {out_dir}/:")
    for label, rel in (("quality report", "quality/index.html"),
                       ("study report", "report/index.html"), ("analysis tables", "parquet/"),
                       ("FHIR NDJSON and bundles", "fhir/"), ("run summary", "run-summary.json")):
        if (out_dir / rel).exists():
            console.print(f"  {label:<24} {out_dir / rel}")


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def validate(args: argparse.Namespace) -> dict[str, Any]:
    """Re-validate the last synced snapshot in --out; exit 4 on errors unless --warn-only."""
    from dataclasses import asdict

    from imt_etl.errors import ValidationFailed
    from imt_etl.outputs import load_study_config, validate_and_report
    from imt_etl.summary import now_iso

    out_dir = Path(args.out)
    meta, snapshot = pipeline.load_extraction_inputs(out_dir)
    summary = RunSummary(project="validate", study=args.study, mode="validate",
                         started_at=now_iso())
    result = validate_and_report(pipeline.tidy(meta, snapshot), meta,
                                 load_study_config(args.study, meta).rules, out_dir, summary)
    if not (args.quiet or args.json):
        print_findings(result, out_dir)
    report = {"instruments": {k: asdict(v) for k, v in summary.instruments.items()},
              "errors": len(result.errors), "warnings": len(result.warnings),
              "report": str(out_dir / "quality" / "index.html")}
    if result.has_errors and not args.warn_only:
        if args.json:
            print(json.dumps(report, indent=2, sort_keys=True))
        raise ValidationFailed(
            f"{len(result.errors)} validation error(s) in {out_dir}: see "
            f"{out_dir / 'quality' / 'index.html'} (use --warn-only to exit 0)"
        )
    return report


def print_findings(result: Any, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="validation findings", title_justify="left")
    for name in ("instrument", "rule", "severity", "count"):
        table.add_column(name, justify="right" if name == "count" else "left")
    findings = result.findings
    if len(findings):
        grouped = findings.groupby(["instrument", "rule_id", "severity"]).size()
        for (form, rule, severity), count in grouped.items():
            table.add_row(form, rule, severity, str(count))
    console.print(table)
    console.print(f"{len(result.errors)} error(s), {len(result.warnings)} warning(s); "
                  f"report: {out_dir / 'quality' / 'index.html'}")


def publish(args: argparse.Namespace) -> dict[str, Any]:
    """POST the last run's transaction bundles to a FHIR server."""
    from imt_etl.fhir.publish import publish_bundles
    from imt_etl.io import write_json_atomic

    bundle_dir = Path(args.out) / "fhir" / "bundles"
    if not (bundle_dir / "manifest.json").is_file():
        raise ConfigError(f"no FHIR bundles in {bundle_dir}: run `imt-etl sync` or `demo` first")
    printer = ProgressPrinter(enabled=not (args.quiet or args.json))
    with printer:
        report = publish_bundles(bundle_dir, args.fhir_base, allow_insecure_http=args.insecure,
                                 progress=printer.update)
    outcome = {
        "base_url": report.base_url, "entries": report.entries,
        "bundles": [vars(o) for o in report.outcomes],
    }
    write_json_atomic(Path(args.out) / "fhir" / "publish-report.json", outcome)
    if not (args.quiet or args.json):
        print(f"published {len(report.outcomes)} bundles ({report.entries} entries) to "
              f"{report.base_url}")
    return outcome


def questionnaire(args: argparse.Namespace) -> dict[str, Any] | None:
    """Print (or write) the FHIR Questionnaires generated from a project's data dictionary."""
    from imt_etl.fhir.export import project_questionnaires
    from imt_etl.fhir.ndjson import dumps
    from imt_etl.io import write_bytes_atomic
    from imt_etl.redcap.dictionary import DataDictionary
    from imt_etl.redcap.project_xml import read_project_xml
    from imt_etl.studies.imt import reference_project_path

    source = args.dictionary if args.dictionary is not None else args.project
    if args.dictionary is not None and args.project is not None:
        raise ConfigError("give --project or --dictionary, not both")
    if source is not None and not Path(source).is_file():
        option = "--dictionary" if args.dictionary is not None else "--project"
        raise ConfigError(f"{option} {source}: no such file")
    reference_default = reference_project_path()
    if source is None:
        source = reference_default
    dictionary = (DataDictionary.from_csv_file(Path(source)) if args.dictionary is not None
                  else read_project_xml(Path(source)).dictionary)
    forms = [args.form] if args.form else dictionary.forms
    unknown = [f for f in forms if f not in dictionary.forms]
    if unknown:
        raise ConfigError(f"--form {unknown[0]!r} is not an instrument of {source} "
                          f"(instruments: {', '.join(dictionary.forms)})")
    # The bundled project uses the reference mapping; another project only the one named.
    study = args.study or ("imt" if source == reference_default else None)
    built = project_questionnaires(dictionary, forms, study,
                                   canonical_base=args.canonical_base)
    for form, build in built.items():
        for report in build.unsupported:
            log.warning("%s.%s: branching logic %r kept as text: %s", form, report.field,
                        report.logic, report.reason)
        if args.write:
            path = Path(args.write) / f"Questionnaire-{form}.json"
            write_bytes_atomic(path, json.dumps(build.resource, indent=2).encode() + b"\n")
        elif not args.json:
            sys.stdout.write(dumps(build.resource).decode() + "\n")
    if args.json:
        return {form: build.resource for form, build in built.items()}
    return None

