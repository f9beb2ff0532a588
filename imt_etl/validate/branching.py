"""Required fields and branching logic, evaluated on the raw REDCap rows.

A required field is missing only where its branching logic shows it; a value present where the
logic hides the field is a warning (REDCap keeps such values when logic changes after entry).
Logic is parsed once per field and evaluated once per distinct combination of the values it reads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from imt_etl.errors import LogicError
from imt_etl.redcap.dictionary import Field, checkbox_column
from imt_etl.redcap.logic import Expr, FieldRef, SmartVariable, evaluate, parse_logic
from imt_etl.redcap.tidy import ProjectMeta
from imt_etl.validate.quarantine import ERROR, ROW_KEY, WARNING, Finding, key_strings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParsedLogic:
    expr: Expr
    columns: tuple[str, ...]  # export columns the logic reads
    cross_event: bool  # reads [event][field]: needs the record's other events


def _walk(expr: object) -> Iterable[object]:
    yield expr
    for name in ("left", "right", "operand"):
        if hasattr(expr, name):
            yield from _walk(getattr(expr, name))
    for name in ("items", "args"):
        for child in getattr(expr, name, ()):
            yield from _walk(child)


def parse_branching(f: Field, meta: ProjectMeta) -> ParsedLogic | None:
    """The field's parsed logic, or None (logged) when REDCap logic we cannot parse."""
    try:
        expr = parse_logic(f.branching_logic, field=f.name)
    except LogicError as exc:
        log.warning("branching logic not checked: %s", exc)
        return None
    columns: list[str] = ["redcap_event_name"]
    cross = False
    for node in _walk(expr):
        if isinstance(node, FieldRef):
            cross = cross or (node.event is not None and node.event != "event-name")
            known = meta.dictionary.has_field(node.field)
            target = meta.dictionary.field(node.field) if known else None
            if target is not None and target.is_checkbox:
                columns += target.export_columns
            else:
                columns.append(node.field)
        elif isinstance(node, SmartVariable) and node.name != "event-name":
            log.warning("branching logic of %r uses [%s]; not checked", f.name, node.name)
            return None
    return ParsedLogic(expr, tuple(dict.fromkeys(columns)), cross)


def _truthy(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int | float):
        return value != 0
    return str(value).strip() not in ("", "0")


def _context_keys(frame: pd.DataFrame) -> pd.Series:
    """Key of the record x event (x repeating-event instance) row a row reads values from.

    A repeating-instrument row reads the event's non-repeating values, so its instance is dropped.
    """
    instance = frame["redcap_repeat_instance"].where(frame["redcap_repeat_instrument"].isna())
    return key_strings([frame["record_id"], frame["redcap_event_name"], instance])


class EventContext:
    """All forms' raw values per record x event (x repeating-event instance), for logic."""

    def __init__(self, raw: Mapping[str, pd.DataFrame]):
        self.raw = raw
        self._wide: pd.DataFrame | None = None
        # frame id -> (frame, its context keys): one computation per form, not per field.
        self._keys: dict[int, tuple[pd.DataFrame, pd.Series]] = {}

    @property
    def wide(self) -> pd.DataFrame:
        """Built on first use: projects without branching logic never pay for it."""
        if self._wide is None:
            self._wide = self._build(self.raw)
        return self._wide

    @staticmethod
    def _build(raw: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        parts = []
        for frame in raw.values():
            plain = frame[frame["redcap_repeat_instrument"].isna()]
            data = plain.drop(columns=[c for c in plain.columns if c in ROW_KEY or c ==
                                       "redcap_arm"])
            parts.append(data.set_axis(_context_keys(plain), axis=0))
        wide = pd.concat(parts, axis=1) if parts else pd.DataFrame()
        return wide[~wide.index.duplicated()]

    def context_keys(self, frame: pd.DataFrame) -> pd.Series:
        hit = self._keys.get(id(frame))
        if hit is None or hit[0] is not frame:
            hit = self._keys[id(frame)] = (frame, _context_keys(frame))
        return hit[1]

    def columns_for(self, frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
        keys = self.context_keys(frame)
        out: dict[str, pd.Series] = {}
        for col in columns:
            if col in frame.columns:
                out[col] = frame[col].astype("string").fillna("")
            elif col in self.wide.columns:
                out[col] = pd.Series(self.wide[col].reindex(keys).fillna("").to_numpy(),
                                     index=frame.index, dtype="string")
            else:
                out[col] = pd.Series("", index=frame.index, dtype="string")
        return pd.DataFrame(out, index=frame.index)

    def events_of(self, record: str) -> dict[str, dict[str, str]]:
        prefix = f"{record}\x1f"
        rows = self.wide[[str(k).startswith(prefix) for k in self.wide.index]]
        return {str(k).split("\x1f")[1]: v.fillna("").to_dict() for k, v in rows.iterrows()}


def shown_mask(logic: ParsedLogic, frame: pd.DataFrame, context: EventContext) -> pd.Series:
    """True where the field is shown; one evaluation per distinct input (memoised)."""
    values = context.columns_for(frame, logic.columns)
    # Object arrays: iterating arrow-backed string columns cell by cell is several times slower.
    records = frame["record_id"].astype("string").to_numpy(dtype=object)
    memo: dict[tuple, bool] = {}
    out: list[bool] = []
    names = list(values.columns)
    for record, row in zip(records, map(tuple, values.to_numpy(dtype=object)), strict=True):
        key = (record, *row) if logic.cross_event else row
        if key not in memo:
            events = context.events_of(record) if logic.cross_event else None
            memo[key] = _truthy(evaluate(logic.expr, dict(zip(names, row, strict=True)),
                                         events=events))
        out.append(memo[key])
    return pd.Series(out, index=frame.index, dtype=bool)


def _present(f: Field, raw: pd.DataFrame, meta: ProjectMeta) -> tuple[pd.Series, pd.Series]:
    """(has a real value, has a missing-data code) for one field on each raw row."""
    codes = {c.code for c in meta.missing_codes}
    if f.is_checkbox:
        real = _ticked(raw, f.export_columns)
        coded = _ticked(raw, [checkbox_column(f.name, c) for c in codes])
    else:
        # Plain numpy over the strings: a handful of pandas operations per field added up.
        values = raw[f.name].astype("string").to_numpy(dtype=object, na_value="")
        coded = np.fromiter((v in codes for v in values), bool, len(values))
        real = (values != "") & ~coded
    return pd.Series(real, index=raw.index), pd.Series(coded, index=raw.index)


def _ticked(raw: pd.DataFrame, columns: Iterable[str]) -> np.ndarray:
    """True where any of the (present) checkbox columns is "1"."""
    out = np.zeros(len(raw), dtype=bool)
    for c in columns:
        if c in raw.columns:
            out |= raw[c].to_numpy(dtype=object, na_value="") == "1"
    return out


def _key(raw: pd.DataFrame) -> list[tuple]:
    inst = raw["redcap_repeat_instance"].astype("object").where(
        raw["redcap_repeat_instance"].notna(), None)
    return list(zip(raw["record_id"], raw["redcap_event_name"].astype("object").where(
        raw["redcap_event_name"].notna(), None), raw["redcap_repeat_instrument"].astype(
        "object").where(raw["redcap_repeat_instrument"].notna(), None),
        [None if v is None else int(v) for v in inst], strict=True))


def branching_findings(form: str, fields: Iterable[Field], raw: pd.DataFrame, meta: ProjectMeta,
                       context: EventContext) -> list[Finding]:
    """dict.required (error) and dict.branching_hidden_value (warning) findings for one form."""
    found: list[Finding] = []
    if raw.empty:
        return found
    keys: list[tuple] | None = None
    for f in fields:
        if f.field_type in ("calc", "descriptive") or not (f.required or f.branching_logic):
            continue
        logic = parse_branching(f, meta) if f.branching_logic.strip() else None
        if f.branching_logic.strip() and logic is None:
            continue
        shown = (shown_mask(logic, raw, context) if logic
                 else pd.Series(True, index=raw.index))
        real, coded = _present(f, raw, meta)
        missing = (shown & ~real & ~coded) if f.required else pd.Series(False, index=raw.index)
        hidden = ~shown & real
        if not (missing.any() or hidden.any()):
            continue
        keys = keys or _key(raw)
        for i in missing.to_numpy().nonzero()[0]:
            found.append(Finding("dict.required", ERROR, form, *keys[i], f.name, "",
                                 f"{f.label} [{f.name}] is required but empty"))
        for i in hidden.to_numpy().nonzero()[0]:
            value = _shown_value(f, raw, i)
            found.append(Finding(
                "dict.branching_hidden_value", WARNING, form, *keys[i], f.name, value,
                f"{f.label} [{f.name}] = {value} although its branching logic "
                f"({f.branching_logic.strip()}) hides it"))
    return found


def _shown_value(f: Field, raw: pd.DataFrame, i: int) -> str:
    if f.is_checkbox:
        ticked = [c for c in f.export_columns if c in raw.columns and raw[c].iat[i] == "1"]
        return ",".join(ticked)
    return str(raw[f.name].iat[i])

