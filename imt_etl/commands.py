"""What each `imt-etl` subcommand does; cli.py parses arguments and maps errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from imt_etl import pipeline
from imt_etl.config import Settings, token_from_env
from imt_etl.errors import ConfigError
from imt_etl.privacy import key_from_env
from imt_etl.progress import ProgressPrinter
from imt_etl.summary import RunSummary

log = logging.getLogger(__name__)


def demo(args: argparse.Namespace) -> dict[str, Any]:
    from imt_etl.demo import emulated_project

    with emulated_project() as (url, token):
        settings = Settings(redcap_url=url, token=token, out_dir=args.out, study="imt",
                            project_name="imt-demo", batch_size=args.batch_size,
                            pseudonym_key=key_from_env(allow_demo=True))
        return _run_and_report(settings, args, incremental=False, title="imt-etl demo")


def sync(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(
        redcap_url=args.url, token=token_from_env(), out_dir=args.out,
        project_name=args.project_name, batch_size=args.batch_size, verify_tls=not args.insecure,
        study=args.study, pseudonym_key=key_from_env(),
    )
    return _run_and_report(settings, args, incremental=args.incremental, title="imt-etl sync")


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
