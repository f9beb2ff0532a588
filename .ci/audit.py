"""Audit the project's installed dependencies for known vulnerabilities (`make audit`).

Runs pip-audit (PyPA's auditor, PyPI's vulnerability feed) on the virtual environment. PyPI answers
pip-audit's per-release question at /pypi/<name>/<version>/json; where that endpoint is not served
(some mirrors and proxies serve only /pypi/<name>/json) pip-audit skips the package. For those the
project endpoint is asked instead: it lists the vulnerabilities of the latest release, which is the
answer for a package installed at its latest release. A package installed at an older release stays
"not audited" and is named: a skipped package is never counted as clean.

Writes audit-report.json beside the output folder given (default: .), prints a summary, and exits 1
when any installed release has a known vulnerability, 2 when the audit itself could not run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

PYPI_PROJECT = "https://pypi.org/pypi/{name}/json"


def run_pip_audit(python: str) -> list[dict]:
    """pip-audit's per-package JSON records for the environment of `python`."""
    command = [python, "-m", "pip_audit", "--progress-spinner", "off", "--skip-editable",
               "--format", "json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode not in (0, 1):  # 1: vulnerabilities found, still a report
        sys.exit(f"pip-audit failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout)["dependencies"]


def latest_release_vulns(name: str, version: str) -> tuple[str, list[dict]] | None:
    """(latest version, its vulnerabilities) from PyPI's project endpoint; None if unreachable."""
    try:
        with urllib.request.urlopen(PYPI_PROJECT.format(name=name), timeout=30) as response:
            data = json.load(response)
    except (urllib.error.URLError, TimeoutError, ValueError):
        return None
    return data["info"]["version"], data.get("vulnerabilities") or []


def audit(dependencies: list[dict]) -> dict:
    report = {"by_pip_audit": [], "by_latest_release": [], "not_audited": [], "vulnerable": []}
    for dep in dependencies:
        name, version = dep["name"], dep.get("version")
        if "editable" in dep.get("skip_reason", ""):
            continue  # this project itself, installed from the work tree
        if "skip_reason" not in dep:
            report["by_pip_audit"].append(f"{name}=={version}")
            if dep.get("vulns"):
                report["vulnerable"].append({"package": f"{name}=={version}",
                                             "ids": [v["id"] for v in dep["vulns"]]})
            continue
        version = version or dep["skip_reason"].rsplit("(", 1)[-1].rstrip(")")
        latest = latest_release_vulns(name, version)
        if latest is None or latest[0] != version:
            reason = ("PyPI unreachable" if latest is None
                      else f"installed {version}, latest {latest[0]}: per-release data not served")
            report["not_audited"].append({"package": f"{name}=={version}", "reason": reason})
            continue
        report["by_latest_release"].append(f"{name}=={version}")
        if latest[1]:
            report["vulnerable"].append({"package": f"{name}=={version}",
                                         "ids": [v["id"] for v in latest[1]]})
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the environment's interpreter")
    parser.add_argument("--out", default=".", help="folder for audit-report.json")
    args = parser.parse_args()
    report = audit(run_pip_audit(args.python))
    Path(args.out, "audit-report.json").write_text(json.dumps(report, indent=2) + "\n")
    audited = len(report["by_pip_audit"]) + len(report["by_latest_release"])
    total = audited + len(report["not_audited"])
    print(f"dependency audit: {audited} of {total} installed packages audited "
          f"({len(report['by_pip_audit'])} by pip-audit, {len(report['by_latest_release'])} "
          f"via their latest release), {len(report['vulnerable'])} with known vulnerabilities")
    for item in report["not_audited"]:
        print(f"  not audited: {item['package']} ({item['reason']})")
    for item in report["vulnerable"]:
        print(f"  VULNERABLE: {item['package']}: {', '.join(item['ids'])}")
    return 1 if report["vulnerable"] else 0


if __name__ == "__main__":
    sys.exit(main())
