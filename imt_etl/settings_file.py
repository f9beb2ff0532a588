"""Sync settings from a YAML file, overridden by environment variables, then by CLI options.

The REDCap token is never read from a file (a file is copied, committed and backed up): a
`token` key is an error. Environment variables: IMT_ETL_REDCAP_URL, IMT_ETL_PROJECT,
IMT_ETL_STUDY, IMT_ETL_OUT, IMT_ETL_BATCH_SIZE, IMT_ETL_MAPPINGS, IMT_ETL_SCHEMAS,
IMT_ETL_WORKERS.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from imt_etl.errors import ConfigError

# key -> (type, environment variable)
KEYS: dict[str, tuple[type, str]] = {
    "url": (str, "IMT_ETL_REDCAP_URL"),
    "project_name": (str, "IMT_ETL_PROJECT"),
    "study": (str, "IMT_ETL_STUDY"),
    "out": (str, "IMT_ETL_OUT"),
    "batch_size": (int, "IMT_ETL_BATCH_SIZE"),
    "mappings": (str, "IMT_ETL_MAPPINGS"),
    "schemas": (str, "IMT_ETL_SCHEMAS"),
    "workers": (int, "IMT_ETL_WORKERS"),
}
SECRET_KEYS = frozenset({"token", "api_token", "redcap_api_token", "pseudonym_key"})


def read_settings_file(path: Path) -> dict[str, Any]:
    """The keys of a settings file, type-checked; errors name the file and the key."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"settings file {path}: cannot be read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"settings file {path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"settings file {path}: expected a mapping of keys to values")
    for key, value in data.items():
        if key in SECRET_KEYS:
            raise ConfigError(f"settings file {path}, key {key!r}: secrets are read only from "
                              "the environment (REDCAP_API_TOKEN, IMT_ETL_PSEUDONYM_KEY)")
        if key not in KEYS:
            raise ConfigError(f"settings file {path}, key {key!r}: unknown (known: "
                              f"{', '.join(KEYS)})")
        kind = KEYS[key][0]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"settings file {path}, key {key!r}: expected {kind.__name__}, "
                              f"got {value!r}")
    return data


def from_environment(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if env is None else env
    found: dict[str, Any] = {}
    for key, (kind, name) in KEYS.items():
        raw = env.get(name, "").strip()
        if not raw:
            continue
        try:
            found[key] = kind(raw)
        except ValueError as exc:
            raise ConfigError(f"environment variable {name}: expected {kind.__name__}, "
                              f"got {raw!r}") from exc
    return found


def merged_settings(file: Path | None, cli: Mapping[str, Any],
                    env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """File, then environment, then the options given on the command line (not None)."""
    merged = read_settings_file(file) if file is not None else {}
    merged.update(from_environment(env))
    merged.update({k: v for k, v in cli.items() if v is not None})
    return merged
