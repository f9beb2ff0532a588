"""Study rules beyond the data dictionary: loaded as data from schemas/<study>/rules.yaml.

Each rule has an id, a severity (error|warning), a kind and a message template a data manager
understands. Kinds (schemas/README.md documents every key): range, compare, equals_max_of,
visit_order, visit_window, cross_instrument and python (a check registered with
`register_check`). Checks are vectorised over the typed instrument tables; findings carry the
value as REDCap sent it (from the raw tables).
"""

from __future__ import annotations

import logging
import operator
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import yaml

from imt_etl.errors import ConfigError
from imt_etl.redcap.tidy import ProjectMeta
from imt_etl.validate.quarantine import SEVERITIES, Finding

log = logging.getLogger(__name__)

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}
# Keys each kind accepts (beyond id, kind, severity, message, description); * = required.
KIND_KEYS: dict[str, dict[str, bool]] = {
    "range": {"instrument": True, "fields": True, "min": False, "max": False,
              "magnitude": False, "replaces_dictionary_range": False},
    "compare": {"instrument": True, "field": True, "op": True, "other": True},
    "equals_max_of": {"instrument": True, "field": True, "of": True, "magnitude": False},
    "visit_order": {"date_fields": True, "events": True},
    "visit_window": {"date_fields": True, "anchor_event": True, "windows": True},
    "cross_instrument": {"instrument": True, "field": True, "min": False, "max": False},
    "python": {"check": True, "instrument": True, "params": False},
}
REF_KEYS = {"instrument", "field", "event", "offset"}
PLACEHOLDERS = {"value", "field", "label", "min", "max", "other", "other_value", "best",
                "trials", "previous", "previous_event", "event", "day", "low", "high", "anchor",
                "bound", "bound_field"}


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    severity: str
    message: str
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def instruments(self) -> tuple[str, ...]:
        if "date_fields" in self.params:
            return tuple(self.params["date_fields"])
        return (self.params["instrument"],)

    def text(self, **values: Any) -> str:
        """The message with its placeholders filled (unknown ones left as written)."""
        return self.message.format_map(_Blank({k: _show(v) for k, v in values.items()}))


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _show(value: Any) -> str:
    if value is None or (not isinstance(value, str | list | tuple) and pd.isna(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat()
    return str(value)


@dataclass(frozen=True)
class StudyRules:
    study: str
    rules: tuple[Rule, ...]
    source: str = ""

    def superseded_ranges(self) -> set[tuple[str, str]]:
        """(instrument, field) whose dictionary min/max a study range rule replaces."""
        return {
            (r.params["instrument"], f) for r in self.rules
            if r.kind == "range" and r.params.get("replaces_dictionary_range", True)
            for f in r.params["fields"]
        }


# -- loading -----------------------------------------------------------------------------------


def _fail(source: str, rule: str, problem: str) -> ConfigError:
    return ConfigError(f"study rules {source}, rule {rule!r}: {problem}")


def _rule(item: Mapping[str, Any], source: str) -> Rule:
    rid = str(item.get("id") or "")
    if not rid:
        raise _fail(source, "<no id>", "every rule needs an id")
    kind = item.get("kind")
    if kind not in KIND_KEYS:
        raise _fail(source, rid, f"kind {kind!r} is not one of {', '.join(KIND_KEYS)}")
    if item.get("severity") not in SEVERITIES:
        raise _fail(source, rid, f"severity {item.get('severity')!r} must be error or warning")
    message = str(item.get("message") or "")
    if not message:
        raise _fail(source, rid, "a message for the data manager is required")
    used = {name for _, name, _, _ in string.Formatter().parse(message) if name}
    if used - PLACEHOLDERS:
        raise _fail(source, rid, f"unknown placeholder(s) {sorted(used - PLACEHOLDERS)}")
    params = {k: v for k, v in item.items()
              if k not in ("id", "kind", "severity", "message", "description")}
    allowed = KIND_KEYS[kind]
    if unknown := set(params) - set(allowed):
        raise _fail(source, rid, f"unknown key(s) {sorted(unknown)} for kind {kind}")
    if missing := {k for k, req in allowed.items() if req and k not in params}:
        raise _fail(source, rid, f"missing key(s) {sorted(missing)} for kind {kind}")
    if kind == "range" and isinstance(params["fields"], str):
        params["fields"] = [params["fields"]]
    if kind == "compare" and params["op"] not in OPS:
        raise _fail(source, rid, f"op {params['op']!r} is not one of {' '.join(OPS)}")
    if kind == "cross_instrument":
        _check_refs(params, source, rid)
    if kind == "python" and params["check"] not in PYTHON_CHECKS:
        raise _fail(source, rid, f"no registered python check {params['check']!r}")
    return Rule(rid, kind, item["severity"], message, params, str(item.get("description") or ""))


def _check_refs(params: dict[str, Any], source: str, rid: str) -> None:
    if "min" not in params and "max" not in params:
        raise _fail(source, rid, "cross_instrument needs min and/or max")
    for side in ("min", "max"):
        ref = params.get(side)
        if ref is None:
            continue
        if not isinstance(ref, Mapping) or not {"instrument", "field"} <= set(ref):
            raise _fail(source, rid, f"{side} must name an instrument and a field")
        if unknown := set(ref) - REF_KEYS:
            raise _fail(source, rid, f"{side}: unknown key(s) {sorted(unknown)}")


def load_rules(path: Path) -> StudyRules:
    """Read and check one rules.yaml (ConfigError naming the file and the rule when wrong)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"study rules {path}: cannot read: {exc}") from exc
    items = doc.get("rules") or []
    rules = tuple(_rule(item, str(path)) for item in items)
    ids = [r.id for r in rules]
    if len(ids) != len(set(ids)):
        raise ConfigError(f"study rules {path}: duplicate rule ids")
    return StudyRules(str(doc.get("study") or path.parent.name), rules, str(path))


def study_rules(study: str, root: Path = SCHEMAS_DIR) -> StudyRules:
    """The rules of a study from `<root>/<study>/rules.yaml`."""
    return load_rules(root / study / "rules.yaml")


def check_against(rules: StudyRules, meta: ProjectMeta) -> None:
    """Every instrument and field a rule names exists in the project (ConfigError if not)."""
    for rule in rules.rules:
        for form, name in _named_fields(rule):
            if form not in meta.dictionary.forms:
                raise _fail(rules.source, rule.id, f"instrument {form!r} is not in the project")
            if not any(f.name == name for f in meta.dictionary.form_fields(form)):
                raise _fail(rules.source, rule.id, f"field {name!r} is not in {form!r}")


def _named_fields(rule: Rule) -> list[tuple[str, str]]:
    p = rule.params
    if rule.kind in ("visit_order", "visit_window"):
        return list(p["date_fields"].items())
    if rule.kind == "python":
        return []
    form = p["instrument"]
    names = {"range": lambda: p["fields"], "compare": lambda: [p["field"], p["other"]],
             "equals_max_of": lambda: [p["field"], *p["of"]],
             "cross_instrument": lambda: [p["field"]]}[rule.kind]()
    out = [(form, n) for n in names]
    out += [(p[s]["instrument"], p[s]["field"]) for s in ("min", "max")
            if rule.kind == "cross_instrument" and s in p]
    return out


# -- running -----------------------------------------------------------------------------------


@dataclass
class RuleContext:
    """What a check sees: typed tables, raw tables (REDCap strings) and the project design."""

    tables: Mapping[str, pd.DataFrame]
    raw: Mapping[str, pd.DataFrame]
    meta: ProjectMeta

    def label(self, name: str) -> str:
        d = self.meta.dictionary
        return d.field(name).label if d.has_field(name) else name

    def findings(self, rule: Rule, form: str, mask: pd.Series, name: str,
                 **extra: pd.Series | Any) -> list[Finding]:
        """One finding per True row of `mask` in `form`, on field `name`; `extra` fills the
        message (Series are read at each row, scalars used as they are)."""
        table, raw = self.tables[form], self.raw[form]
        hits = mask.fillna(False).to_numpy(dtype=bool).nonzero()[0]
        out: list[Finding] = []
        label = self.label(name)
        for i in hits:
            row = table.iloc[i]
            value = str(raw[name].iat[i]) if name in raw.columns else _show(table[name].iat[i])
            values = {k: (v.iat[i] if isinstance(v, pd.Series) else v) for k, v in extra.items()}
            instance = row["redcap_repeat_instance"]
            out.append(Finding(
                rule.id, rule.severity, form, str(row["record_id"]),
                None if pd.isna(row["redcap_event_name"]) else str(row["redcap_event_name"]),
                None if pd.isna(row["redcap_repeat_instrument"])
                else str(row["redcap_repeat_instrument"]),
                None if pd.isna(instance) else int(instance), name, value,
                rule.text(value=value, field=name, label=label, **values)))
        return out


Check = Callable[[Rule, RuleContext], list[Finding]]
PYTHON_CHECKS: dict[str, Check] = {}


def register_check(name: str) -> Callable[[Check], Check]:
    """Register a Python check usable from rules.yaml as `kind: python, check: <name>`."""

    def wrap(fn: Check) -> Check:
        PYTHON_CHECKS[name] = fn
        return fn

    return wrap


def _numbers(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").astype("Float64")


def _dates(s: pd.Series) -> pd.Series:
    if not str(s.dtype).startswith("date32"):
        return s
    # Arrow's cast, as s.astype("datetime64[ms]") but without its per-value Python path.
    stamps = pa.array(s.array).cast(pa.timestamp("ms")).to_numpy(zero_copy_only=False)
    return pd.Series(stamps, index=s.index, name=s.name, dtype="datetime64[ms]")


def _range(rule: Rule, ctx: RuleContext) -> list[Finding]:
    p, form = rule.params, rule.params["instrument"]
    out: list[Finding] = []
    for name in p["fields"]:
        values = _numbers(ctx.tables[form][name])
        if p.get("magnitude"):
            values = values.abs()
        bad = pd.Series(False, index=values.index)
        if p.get("min") is not None:
            bad |= values < p["min"]
        if p.get("max") is not None:
            bad |= values > p["max"]
        out += ctx.findings(rule, form, bad & values.notna(), name, min=p.get("min"),
                            max=p.get("max"))
    return out


def _compare(rule: Rule, ctx: RuleContext) -> list[Finding]:
    p, form = rule.params, rule.params["instrument"]
    table = ctx.tables[form]
    left, right = table[p["field"]], table[p["other"]]
    ok = OPS[p["op"]](left, right)
    bad = left.notna() & right.notna() & ~ok.fillna(True).astype(bool)
    return ctx.findings(rule, form, bad, p["field"], other=p["other"],
                        other_value=ctx.raw[form][p["other"]])


def _equals_max_of(rule: Rule, ctx: RuleContext) -> list[Finding]:
    p, form = rule.params, rule.params["instrument"]
    table = ctx.tables[form]
    trials = pd.DataFrame({n: _numbers(table[n]) for n in p["of"]})
    best = _numbers(table[p["field"]])
    if p.get("magnitude"):
        trials, best = trials.abs(), best.abs()
    top = trials.max(axis=1, skipna=True)
    bad = (best.notna() & top.notna() & (best != top)).astype(bool)
    if not bad.any():
        return []
    shown = ctx.raw[form].loc[bad.to_numpy(), p["of"]].agg(", ".join, axis=1)
    return ctx.findings(rule, form, bad, p["field"], best=top,
                        trials=shown.reindex(bad.index))


def _visit_rows(ctx: RuleContext, form: str, name: str, events: list[str]) -> pd.DataFrame:
    """Non-repeating rows of `form` at `events`: record, event rank, date, and the row position."""
    table = ctx.tables[form]
    rank = table["redcap_event_name"].map({e: i for i, e in enumerate(events)})
    keep = table["redcap_repeat_instrument"].isna() & rank.notna()
    return pd.DataFrame({
        "record": table["record_id"], "rank": rank, "event": table["redcap_event_name"],
        "date": _dates(table[name]), "pos": range(len(table)),
    })[keep.to_numpy(dtype=bool)]


def _visit_order(rule: Rule, ctx: RuleContext) -> list[Finding]:
    events = list(rule.params["events"])
    out: list[Finding] = []
    for form, name in rule.params["date_fields"].items():
        rows = _visit_rows(ctx, form, name, events).dropna(subset=["date"])
        rows = rows.sort_values(["record", "rank"], kind="stable")
        previous = rows.groupby("record")["date"].cummax().groupby(rows["record"]).shift()
        prev_event = rows["event"].groupby(rows["record"]).shift()
        bad = (rows["date"] <= previous).fillna(False)
        out += _at_positions(rule, ctx, form, name, rows.loc[bad, "pos"],
                             previous=previous[bad], previous_event=prev_event[bad])
    return out


def _at_positions(rule: Rule, ctx: RuleContext, form: str, name: str, positions: pd.Series,
                  **extra: pd.Series) -> list[Finding]:
    """Findings at table positions, with per-finding message values aligned to the positions."""
    mask = pd.Series(False, index=ctx.tables[form].index)
    mask.iloc[positions.to_numpy()] = True
    full = {k: pd.Series(list(v.to_numpy()), index=positions.to_numpy()).reindex(
        range(len(mask))).set_axis(mask.index) for k, v in extra.items()}
    return ctx.findings(rule, form, mask, name, **full)


def _visit_window(rule: Rule, ctx: RuleContext) -> list[Finding]:
    p = rule.params
    windows: dict[str, list[float]] = p["windows"]
    events = [p["anchor_event"], *windows]
    out: list[Finding] = []
    for form, name in p["date_fields"].items():
        rows = _visit_rows(ctx, form, name, events).dropna(subset=["date"])
        anchors = rows[rows["event"] == p["anchor_event"]].drop_duplicates("record")
        anchor = rows["record"].map(anchors.set_index("record")["date"])
        day = (rows["date"] - anchor).dt.days
        low = rows["event"].map({e: w[0] for e, w in windows.items()})
        high = rows["event"].map({e: w[1] for e, w in windows.items()})
        bad = (day.notna() & low.notna() & ((day < low) | (day > high))).astype(bool)
        out += _at_positions(rule, ctx, form, name, rows.loc[bad, "pos"], day=day[bad],
                             low=low[bad], high=high[bad], anchor=anchor[bad],
                             event=rows.loc[bad, "event"])
    return out


def _reference(ctx: RuleContext, ref: Mapping[str, Any], rule: Rule) -> pd.Series:
    """The referenced value per record (one per record, else ConfigError), offset applied."""
    table = ctx.tables[ref["instrument"]]
    rows = table if "event" not in ref else table[table["redcap_event_name"] == ref["event"]]
    values = pd.DataFrame({"record": rows["record_id"], "v": _dates(rows[ref["field"]])})
    values = values.dropna(subset=["v"])
    if values["record"].duplicated().any():
        raise ConfigError(f"rule {rule.id!r}: {ref['instrument']}.{ref['field']} has several "
                          "values for one record; name the event")
    series = values.set_index("record")["v"]
    offset = ref.get("offset", 0)
    if offset:
        is_date = pd.api.types.is_datetime64_any_dtype(series)
        series = series + (pd.Timedelta(days=offset) if is_date else offset)
    return series


def _cross_instrument(rule: Rule, ctx: RuleContext) -> list[Finding]:
    p, form = rule.params, rule.params["instrument"]
    table = ctx.tables[form]
    value = _dates(table[p["field"]])
    out: list[Finding] = []
    for side, op in (("min", operator.lt), ("max", operator.gt)):
        if side not in p:
            continue
        reference = _reference(ctx, p[side], rule)
        if reference.empty:  # nothing to compare with (say, nobody has withdrawn)
            continue
        bound = table["record_id"].map(reference)
        if not pd.api.types.is_datetime64_any_dtype(value):
            bound = _numbers(bound)
        bad = (value.notna() & bound.notna()).astype(bool)
        bad &= op(value, bound).fillna(False).astype(bool)
        out += ctx.findings(rule, form, bad, p["field"], bound=bound,
                            bound_field=p[side]["field"], **{side: bound})
    return out


def _python(rule: Rule, ctx: RuleContext) -> list[Finding]:
    return PYTHON_CHECKS[rule.params["check"]](rule, ctx)


KINDS: dict[str, Check] = {
    "range": _range, "compare": _compare, "equals_max_of": _equals_max_of,
    "visit_order": _visit_order, "visit_window": _visit_window,
    "cross_instrument": _cross_instrument, "python": _python,
}


def run_rules(rules: StudyRules, ctx: RuleContext) -> list[Finding]:
    """All study-rule findings (rules on instruments absent from the tables are skipped)."""
    check_against(rules, ctx.meta)
    out: list[Finding] = []
    for rule in rules.rules:
        if any(form not in ctx.tables for form in rule.instruments):
            log.debug("rule %s skipped: instrument not validated in this run", rule.id)
            continue
        out += KINDS[rule.kind](rule, ctx)
    return out
