"""The REDCap projects a deployment syncs: a YAML file (a Dagster partition each) or one default.

A projects file looks like `projects.example.yaml`:

    out_root: out/dagster          # optional; a project's outputs default to <out_root>/<name>
    projects:
      - name: site-krakow          # partition key: letters, digits, '-', '_'
        url: https://redcap.example.org/api/
        token_env: REDCAP_TOKEN_KRAKOW   # the token itself is only ever in the environment
        batch_size: 100
      - name: demo
        emulator: reference        # or a path to a REDCap project XML, served on loopback
        out_dir: out/demo          # optional explicit output folder

Without a file (IMT_ETL_PROJECTS unset) there is one project, chosen by IMT_ETL_DEPLOYMENT.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from imt_etl.errors import ConfigError

PROJECTS_ENV = "IMT_ETL_PROJECTS"
DEFAULT_OUT_ROOT = "out/dagster"
DEFAULT_TOKEN_ENV = "REDCAP_API_TOKEN"
REFERENCE = "reference"  # `emulator: reference` serves the bundled IMT study
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEYS = {"name", "url", "emulator", "token_env", "batch_size", "out_dir", "allow_insecure",
         "study"}


@dataclass(frozen=True)
class ProjectSpec:
    """One REDCap project: where it is, which env var holds its token, where its outputs go."""

    name: str
    out_dir: str
    url: str = ""
    emulator: str = ""  # REFERENCE or a project XML path; empty for a real REDCap
    token_env: str = DEFAULT_TOKEN_ENV
    batch_size: int = 50
    allow_insecure: bool = False
    study: str = "imt"  # mappings/<study>/ and schemas/<study>/

    def token(self) -> str:
        """The token from the environment, read only when a run connects (never stored)."""
        value = os.environ.get(self.token_env, "").strip()
        if not value:
            raise ConfigError(
                f"project {self.name!r}: environment variable {self.token_env} (its REDCap API "
                "token) is not set"
            )
        return value


def _spec(entry: object, index: int, source: str, out_root: str) -> ProjectSpec:
    where = f"{source}, projects[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with at least `name`")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} (known: {sorted(_KEYS)})")
    name = str(entry.get("name", ""))
    if not _NAME_RE.match(name):
        raise ConfigError(f"{where}: name {name!r} must be 1-64 letters, digits, '-' or '_'")
    url, emulator = str(entry.get("url") or ""), str(entry.get("emulator") or "")
    if bool(url) == bool(emulator):
        raise ConfigError(f"{where} ({name}): give exactly one of `url` or `emulator`")
    if emulator and emulator != REFERENCE:
        xml = Path(emulator)
        if not xml.is_absolute():
            # An XML path is relative to the projects file, so the file can travel with it.
            xml = Path(source).parent / xml
        emulator = str(xml)
    token_env = str(entry.get("token_env") or DEFAULT_TOKEN_ENV)
    if not _ENV_RE.match(token_env):
        raise ConfigError(f"{where} ({name}): token_env {token_env!r} is not a variable name")
    try:
        batch_size = int(entry.get("batch_size", 50))
    except (TypeError, ValueError):
        batch_size = 0
    if batch_size < 1:
        raise ConfigError(f"{where} ({name}): batch_size must be a positive integer")
    return ProjectSpec(
        name=name, url=url, emulator=emulator, token_env=token_env, batch_size=batch_size,
        out_dir=str(entry.get("out_dir") or Path(out_root) / name),
        allow_insecure=bool(entry.get("allow_insecure", False)),
        study=str(entry.get("study") or "imt"),
    )


def load_projects_file(path: Path) -> list[ProjectSpec]:
    """Parse and check a projects file; names must be unique (they are partition keys)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"projects file {path}: cannot be read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"projects file {path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("projects"), list):
        raise ConfigError(f"projects file {path}: expected a top-level `projects:` list")
    out_root = str(data.get("out_root") or DEFAULT_OUT_ROOT)
    specs = [_spec(e, i, str(path), out_root) for i, e in enumerate(data["projects"])]
    if not specs:
        raise ConfigError(f"projects file {path}: the `projects:` list is empty")
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"projects file {path}: project name {spec.name!r} is repeated")
        seen.add(spec.name)
    return specs


def default_project() -> ProjectSpec:
    """The single project of a deployment without a projects file (IMT_ETL_DEPLOYMENT)."""
    deployment = os.environ.get("IMT_ETL_DEPLOYMENT", "emulator").strip().lower()
    out_root = os.environ.get("IMT_ETL_OUT", DEFAULT_OUT_ROOT)
    if deployment == "emulator":
        return ProjectSpec(name="imt-demo", emulator=REFERENCE, batch_size=10,
                           out_dir=str(Path(out_root) / "imt-demo"))
    if deployment == "redcap":
        name = os.environ.get("IMT_ETL_PROJECT", "redcap")
        return ProjectSpec(name=name, url=os.environ.get("REDCAP_API_URL", ""),
                           out_dir=str(Path(out_root) / name),
                           batch_size=int(os.environ.get("IMT_ETL_BATCH_SIZE", "50")))
    raise ConfigError(f"IMT_ETL_DEPLOYMENT must be 'emulator' or 'redcap' (got {deployment!r})")


def configured_projects() -> list[ProjectSpec]:
    """The projects of this deployment: from $IMT_ETL_PROJECTS when set, else the default one."""
    path = os.environ.get(PROJECTS_ENV, "").strip()
    return load_projects_file(Path(path)) if path else [default_project()]


def project_by_name(specs: list[ProjectSpec], name: str) -> ProjectSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise ConfigError(f"unknown project {name!r} (configured: {[s.name for s in specs]})")
