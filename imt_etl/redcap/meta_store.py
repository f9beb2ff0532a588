"""Save and load a project's design (ProjectMeta) beside the raw snapshot, as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imt_etl.io import write_json_atomic
from imt_etl.redcap.dictionary import Choice, DataDictionary
from imt_etl.redcap.model import RepeatingSetup
from imt_etl.redcap.tidy import ProjectMeta

META_FILE = "project-meta.json"


def meta_to_json(meta: ProjectMeta) -> dict[str, Any]:
    return {
        "title": meta.title,
        "metadata": meta.dictionary.to_metadata(),
        "event_arms": dict(meta.event_arms),
        "repeating": [[r.event, r.form, r.custom_label] for r in meta.repeating],
        "form_event_mapping": [list(m) for m in meta.form_event_mapping],
        "missing_codes": [[c.code, c.label] for c in meta.missing_codes],
    }


def meta_from_json(data: dict[str, Any]) -> ProjectMeta:
    return ProjectMeta(
        dictionary=DataDictionary.from_metadata(data["metadata"]),
        event_arms={str(k): int(v) for k, v in data["event_arms"].items()},
        repeating=tuple(RepeatingSetup(*r) for r in data["repeating"]),
        form_event_mapping=tuple(
            (int(arm), str(event), str(form)) for arm, event, form in data["form_event_mapping"]
        ),
        missing_codes=tuple(Choice(c, label) for c, label in data["missing_codes"]),
        title=str(data.get("title", "")),
    )


def save_meta(meta: ProjectMeta, state_dir: Path) -> Path:
    return write_json_atomic(Path(state_dir) / META_FILE, meta_to_json(meta))


def load_meta(state_dir: Path) -> ProjectMeta | None:
    path = Path(state_dir) / META_FILE
    if not path.exists():
        return None
    return meta_from_json(json.loads(path.read_text(encoding="utf-8")))
