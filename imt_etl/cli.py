"""The `imt-etl` command line; the only place where errors become exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from imt_etl import __version__
from imt_etl.config import TOKEN_ENV
from imt_etl.errors import ImtEtlError
from imt_etl.redact import RedactingFilter

log = logging.getLogger("imt_etl")

EXIT_OK = 0
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

EPILOG = f"""\
examples:
  imt-etl demo                               run the whole pipeline on the bundled IMT project
  imt-etl demo --out /tmp/imt --json         same, machine-readable summary on stdout
  imt-etl demo --study adl --out /tmp/adl    the bundled two-arm ADL training project
  {TOKEN_ENV}=... imt-etl sync --url https://redcap.example.org/api/
  {TOKEN_ENV}=... imt-etl sync --url https://redcap.example.org/api/ --incremental
  imt-etl validate --out out/                 re-check the last sync, exit 4 on errors
  imt-etl publish --out out/ --fhir-base https://fhir.example.org/fhir
  imt-etl questionnaire --form spirometry    print one instrument's FHIR Questionnaire
  imt-etl redcap-emulator --project imt_etl/studies/imt/imt_project.xml --port 8765

exit codes: 0 ok, 2 configuration or input error, 3 REDCap error, 4 validation errors,
5 FHIR publish error, 6 another run holds the lock, 70 internal error (a bug: please report).
The REDCap token is read only from the environment variable {TOKEN_ENV}.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imt-etl",
        description="Move clinical-trial data from REDCap to FHIR R4 and analysis-ready parquet.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"imt-etl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the pipeline on the bundled reference project")
    _add_output_options(demo)
    demo.add_argument("--batch-size", type=int, default=10, help="records per API call (10)")
    demo.add_argument("--study", default="imt",
                      help="bundled study project to run: imt (reference) or adl (two-arm)")

    sync = sub.add_parser(
        "sync", help="sync a REDCap project (token from the environment)",
        description="Settings come from --config FILE (YAML: url, project_name, study, out, "
        "batch_size, mappings, schemas, workers), then IMT_ETL_REDCAP_URL / IMT_ETL_PROJECT / "
        "IMT_ETL_STUDY / IMT_ETL_OUT / IMT_ETL_BATCH_SIZE / IMT_ETL_MAPPINGS / IMT_ETL_SCHEMAS / "
        "IMT_ETL_WORKERS, "
        "then the options below. The token only from REDCAP_API_TOKEN.")
    _add_output_options(sync, out_default=None)
    sync.add_argument("--config", type=Path, help="YAML settings file")
    sync.add_argument("--url", help="REDCap API URL, ending in /api/")
    sync.add_argument("--project-name", help="name used in state and summaries (redcap)")
    sync.add_argument("--study",
                      help="study configuration: mappings/<study>/ and schemas/<study>/ (imt)")
    sync.add_argument("--mappings", type=Path, metavar="DIR",
                      help="folder holding <study>/ mappings and terminology/ (bundled)")
    sync.add_argument("--schemas", type=Path, metavar="DIR",
                      help="folder holding <study>/rules.yaml (bundled)")
    sync.add_argument("--incremental", action="store_true", help="only changed/deleted records")
    sync.add_argument("--batch-size", type=int, help="records per API call (50)")
    sync.add_argument("--workers", type=int,
                      help="processes building FHIR beside the tables (0: one per core, max 4)")
    sync.add_argument(
        "--insecure", action="store_true", help="allow plain HTTP to a non-loopback host"
    )

    val = sub.add_parser("validate", help="re-validate the last sync; exit 4 on errors")
    _add_output_options(val)
    val.add_argument("--study", default="imt", help="study rules: schemas/<study>/ (imt)")
    val.add_argument("--warn-only", action="store_true", help="report errors but exit 0")

    pub = sub.add_parser("publish", help="POST the last run's FHIR bundles to a FHIR server")
    _add_output_options(pub)
    pub.add_argument("--fhir-base", required=True, help="FHIR base URL, e.g. https://host/fhir")
    pub.add_argument("--insecure", action="store_true", help="allow plain HTTP to a remote host")

    que = sub.add_parser("questionnaire", help="print or write a project's FHIR Questionnaires")
    _add_output_options(que)
    que.add_argument("--project", type=Path, help="REDCap project XML (default: bundled IMT)")
    que.add_argument("--dictionary", type=Path,
                     help="a REDCap data-dictionary CSV instead of a project XML")
    que.add_argument("--form", help="one instrument only")
    que.add_argument("--study", help="mappings/<study>/ for codes and units "
                     "(default: imt for the bundled project, none otherwise)")
    que.add_argument("--canonical-base", help="canonical base URL (default: the mapping's)")
    que.add_argument("--write", type=Path, metavar="DIR", help="write JSON files into DIR")

    emu = sub.add_parser("redcap-emulator", help="serve a REDCap project XML over REDCap's API")
    emu.add_argument("--project", type=Path, help="REDCap project XML (default: bundled IMT)")
    emu.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    emu.add_argument("--port", type=int, default=8765)
    emu.add_argument("--token", help=f"accepted API token (default: ${TOKEN_ENV} or a demo token)")
    emu.add_argument("--faults", default="", help="fault profile, e.g. '500=0.1,429=0.05'")
    emu.add_argument("--allow-remote", action="store_true", help="permit a non-loopback --host")
    return parser


def _add_output_options(parser: argparse.ArgumentParser, out_default: Path | None = Path("out")
                        ) -> None:
    parser.add_argument("--out", type=Path, default=out_default, help="output folder (out/)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter([os.environ.get(TOKEN_ENV, "")]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = logging.getLogger()
    saved = root.handlers[:], root.level  # restored: in-process callers keep their logging
    _configure_logging(args)
    try:
        return _dispatch(args)
    except ImtEtlError as exc:
        print(f"imt-etl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("imt-etl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: keep the message short, the traceback goes to the log
        log.debug("internal error", exc_info=True)
        print(
            f"imt-etl: internal error ({type(exc).__name__}): {_scrubbed(str(exc))}. "
            "Re-run with -v for details and please report it.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def _scrubbed(text: str) -> str:
    from imt_etl.redact import scrub

    return scrub(text, [os.environ.get(TOKEN_ENV, "")])


def _dispatch(args: argparse.Namespace) -> int:
    from imt_etl import commands

    handler = {
        "demo": commands.demo,
        "sync": commands.sync,
        "redcap-emulator": commands.redcap_emulator,
        "validate": commands.validate,
        "publish": commands.publish,
        "questionnaire": commands.questionnaire,
    }[args.command]
    result = handler(args)
    if isinstance(result, dict) and getattr(args, "json", False):
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
