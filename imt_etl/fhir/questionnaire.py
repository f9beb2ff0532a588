"""FHIR R4 Questionnaire per REDCap instrument, generated from the data dictionary as a plain dict.

Decisions (documented here because consumers depend on them):
- linkId = REDCap field name; section headers become groups `section-N` (numbered per form) that
  hold the following fields up to the next header; a matrix group becomes a group
  `matrix-<name>` (itemControl `table`) inside the current section.
- The record id field is left out: it is the QuestionnaireResponse's subject, not an answer.
- Coded answers: radio/dropdown/checkbox use `{canonical_base}/CodeSystem/<field>` with the
  REDCap codes; yesno and truefalse share `{canonical_base}/CodeSystem/redcap-yesno` and
  `.../redcap-truefalse` (codes "1"/"0"). truefalse is a choice, not a boolean, so values
  round-trip.
  A checkbox is ONE repeating choice item.
- Every data item carries the extension `{canonical_base}/StructureDefinition/redcap-field` with
  sub-extensions `fieldType` and `validation` (what the inverse mapping needs), `identifier`
  (true for REDCap identifier fields: privacy work strips their answers) and, when its branching
  logic cannot be expressed as enableWhen, `unsupportedBranchingLogic` with the REDCap text (the
  item then shows unconditionally; the build also reports it).
- Field notes become a child display item `<field>-note` (itemControl `lower`); date/time formats
  go into entryFormat; dictionary min/max into minValue/maxValue; the mapping's UCUM unit into
  questionnaire-unit; the mapping's codes into item.code. @READONLY/calc -> readOnly,
  @HIDDEN -> questionnaire-hidden, @DEFAULT on a choice -> answerOption.initialSelected.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from imt_etl.errors import DictionaryError, LogicError
from imt_etl.fhir.ids import questionnaire_id
from imt_etl.redcap.dictionary import CHOICE_TYPES, FIXED_CHOICES, DataDictionary, Field
from imt_etl.redcap.logic import (
    BinaryOp,
    Call,
    Expr,
    FieldRef,
    Literal,
    Negate,
    parse_logic,
    to_enable_when,
)

logger = logging.getLogger(__name__)

SDC = "http://hl7.org/fhir/StructureDefinition"
EXT_ITEM_CONTROL = f"{SDC}/questionnaire-itemControl"
EXT_UNIT = f"{SDC}/questionnaire-unit"
EXT_SLIDER_STEP = f"{SDC}/questionnaire-sliderStepValue"
EXT_HIDDEN = f"{SDC}/questionnaire-hidden"
EXT_MIN = f"{SDC}/minValue"
EXT_MAX = f"{SDC}/maxValue"
EXT_ENTRY_FORMAT = f"{SDC}/entryFormat"
EXT_REGEX = f"{SDC}/regex"
EXT_CALCULATED = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"
ITEM_CONTROL_SYSTEM = "http://hl7.org/fhir/questionnaire-item-control"
UCUM = "http://unitsofmeasure.org"
REDCAP_FIELD_EXT = "StructureDefinition/redcap-field"  # appended to the canonical base

_DATE_ORDER = {"ymd": "YYYY-MM-DD", "mdy": "MM-DD-YYYY", "dmy": "DD-MM-YYYY"}
_REGEX = {
    "email": r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
    "alpha_only": r"^[A-Za-z]+$",
    "zipcode": r"^\d{5}(-\d{4})?$",
}
_CONTROL = {
    "radio": "radio-button", "yesno": "radio-button", "truefalse": "radio-button",
    "dropdown": "drop-down", "checkbox": "check-box", "slider": "slider",
}
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NAME_PART = re.compile(r"[A-Za-z0-9]+")
_DEFAULT = re.compile(r"""@DEFAULT\s*=\s*(['"])(.*?)\1""")
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class UnsupportedLogicReport:
    """Branching logic (or a calc formula) that could not be translated, and why."""

    field: str
    logic: str
    reason: str


@dataclass
class QuestionnaireBuild:
    """The Questionnaire dict plus what could not be expressed in it (never dropped silently)."""

    resource: dict[str, Any]
    unsupported: list[UnsupportedLogicReport] = field(default_factory=list)
    untranslated_calcs: list[UnsupportedLogicReport] = field(default_factory=list)


# --- public helpers shared with the QuestionnaireResponse builder -------------------------------


def questionnaire_url(canonical_base: str, form: str) -> str:
    return f"{canonical_base.rstrip('/')}/Questionnaire/{form}"


def redcap_field_extension_url(canonical_base: str) -> str:
    return f"{canonical_base.rstrip('/')}/{REDCAP_FIELD_EXT}"


def choice_system(canonical_base: str, f: Field) -> str:
    """The code system of a choice field's answers (REDCap codes are only unique per field)."""
    base = canonical_base.rstrip("/")
    if f.field_type in FIXED_CHOICES:
        return f"{base}/CodeSystem/redcap-{f.field_type}"
    return f"{base}/CodeSystem/{f.name}"


def questionnaire_name(form: str) -> str:
    """A computable name (que-0: `[A-Z][A-Za-z0-9_]*`): `six_minute_walk` -> `SixMinuteWalk`."""
    name = "".join(p[:1].upper() + p[1:] for p in _NAME_PART.findall(form))
    return name if name[:1].isalpha() else f"Q{name}"


def item_type(f: Field) -> str:
    """The R4 item type of a REDCap field, from its field type and text validation."""
    t = f.field_type
    if t in CHOICE_TYPES or t in FIXED_CHOICES:
        return "choice"
    fixed = {"notes": "text", "calc": "decimal", "slider": "integer", "descriptive": "display",
             "file": "attachment", "signature": "attachment", "sql": "string"}
    if t in fixed:
        return fixed[t]
    v = f.validation
    if v == "integer":
        return "integer"
    if v.startswith("number"):
        return "decimal"
    if v.startswith("datetime"):
        return "dateTime"
    if v.startswith("date"):
        return "date"
    if v in ("time", "time_hh_mm_ss"):
        return "time"
    return "string"


def entry_format(f: Field) -> str | None:
    """The display format REDCap uses for a date/time validation, e.g. `DD-MM-YYYY HH:MM:SS`."""
    v = f.validation
    if f.field_type != "text" or not v:
        return None
    if v.startswith(("date_", "datetime_")):
        date = _DATE_ORDER.get(v.rsplit("_", 1)[-1])
        if date is None:
            return None
        if v.startswith("datetime_seconds_"):
            return f"{date} HH:MM:SS"
        return f"{date} HH:MM" if v.startswith("datetime_") else date
    return {"time": "HH:MM", "time_hh_mm_ss": "HH:MM:SS", "time_mm_ss": "MM:SS"}.get(v)


def has_tag(f: Field, tag: str) -> bool:
    return _has_tag(f.annotation, tag)


@lru_cache(maxsize=8192)
def _has_tag(annotation: str, tag: str) -> bool:
    # Asked per field per row when building responses: cached on the (short) annotation text.
    pattern = rf"(?<![A-Za-z0-9_-]){re.escape(tag)}(?![A-Za-z0-9_-])"
    return re.search(pattern, annotation) is not None


# --- the builder --------------------------------------------------------------------------------


@dataclass
class _Ctx:
    base: str
    dictionary: DataDictionary
    form: str
    link_ids: set[str]  # data items of this form: valid enableWhen targets
    mapping: Any
    build: QuestionnaireBuild


def build_questionnaire(
    dictionary: DataDictionary,
    form: str,
    *,
    canonical_base: str,
    version: str,
    mapping: Any = None,
    form_label: str | None = None,
    status: str = "active",
    date: str | None = None,
    id: str | None = None,
) -> QuestionnaireBuild:
    """The Questionnaire of one instrument (see the module docstring for every mapping decision).

    `mapping` is an optional `imt_etl.fhir.mappings.StudyMapping` (item.code and units);
    `date` a FHIR dateTime (a time needs a timezone); `id` defaults to a uuid5 of (base, form,
    version). Unsupported branching logic and untranslated calcs are listed in the result.
    """
    fields = dictionary.form_fields(form)
    if not fields:
        raise DictionaryError(form, f"is not an instrument of this dictionary ({dictionary.forms})")
    base = canonical_base.rstrip("/")
    kept = [f for f in fields if f.name != dictionary.record_id_field]
    build = QuestionnaireBuild(resource={})
    link_ids = {f.name for f in kept if f.has_data}
    ctx = _Ctx(base, dictionary, form, link_ids, mapping, build)
    resource: dict[str, Any] = {
        "resourceType": "Questionnaire",
        "id": id or questionnaire_id(base, form, version),
        "url": questionnaire_url(base, form),
        "version": version,
        "name": questionnaire_name(form),
        "title": form_label or form.replace("_", " ").capitalize(),
        "status": status,
        "subjectType": ["Patient"],
    }
    if date:
        resource["date"] = date
    items = _layout(kept, ctx)
    if items:
        resource["item"] = items
    build.resource = resource
    return build


def _layout(fields: list[Field], ctx: _Ctx) -> list[dict[str, Any]]:
    """Nest fields into section groups and matrix groups, in dictionary order."""
    top: list[dict[str, Any]] = []
    container = top
    sections = 0
    matrix: dict[str, Any] | None = None
    used: set[str] = set()
    for f in fields:
        if f.section_header.strip():
            sections += 1
            group = {"linkId": f"section-{sections}", "text": _plain(f.section_header),
                     "type": "group", "item": []}
            top.append(group)
            container, matrix = group["item"], None
        if f.matrix_group and (matrix is None or matrix["_name"] != f.matrix_group):
            link = _unique(f"matrix-{f.matrix_group}", used)
            matrix = {"extension": [_control("table")], "linkId": link, "type": "group",
                      "item": [], "_name": f.matrix_group}
            container.append(matrix)
        elif not f.matrix_group:
            matrix = None
        (matrix["item"] if matrix is not None else container).append(_item(f, ctx))
    _drop_private(top)
    return top


def _unique(link: str, used: set[str]) -> str:
    n, candidate = 1, link
    while candidate in used:
        n += 1
        candidate = f"{link}-{n}"
    used.add(candidate)
    return candidate


def _drop_private(items: list[dict[str, Any]]) -> None:
    for item in items:
        item.pop("_name", None)
        _drop_private(item.get("item", []))


def _plain(html: str) -> str:
    """Item text without HTML tags (REDCap labels may hold markup)."""
    return re.sub(r"\s+", " ", _TAG.sub(" ", html)).strip()


def _control(code: str) -> dict[str, Any]:
    return {"url": EXT_ITEM_CONTROL, "valueCodeableConcept": {
        "coding": [{"system": ITEM_CONTROL_SYSTEM, "code": code}]}}


def _item(f: Field, ctx: _Ctx) -> dict[str, Any]:
    kind = item_type(f)
    text = _plain(f.label) or f.name
    if kind == "display":
        if f.note.strip():
            text = f"{text} ({_plain(f.note)})"  # display items cannot hold a child note (que-1)
        item: dict[str, Any] = {"linkId": f.name, "text": text, "type": "display"}
        _enable_when(f, item, ctx)
        if has_tag(f, "@HIDDEN"):
            item["extension"] = [{"url": EXT_HIDDEN, "valueBoolean": True}]
        return item
    extensions = _extensions(f, kind, ctx)
    item = {"extension": extensions, "linkId": f.name}
    codes = _mapped_codes(f, ctx)
    if codes:
        item["code"] = codes
    if f.question_number.strip():
        item["prefix"] = f.question_number.strip()
    item.update({"text": text, "type": kind})
    _enable_when(f, item, ctx)
    if f.required:
        item["required"] = True
    if f.is_checkbox:
        item["repeats"] = True
    if f.field_type == "calc" or has_tag(f, "@READONLY"):
        item["readOnly"] = True
    if kind == "choice":
        item["answerOption"] = _answer_options(f, ctx.base)
    children = _children(f)
    if children:
        item["item"] = children
    return item


def _extensions(f: Field, kind: str, ctx: _Ctx) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if f.field_type in _CONTROL:
        out.append(_control(_CONTROL[f.field_type]))
    fmt = entry_format(f)
    if fmt:
        out.append({"url": EXT_ENTRY_FORMAT, "valueString": fmt})
    if f.validation in _REGEX and f.field_type == "text":
        out.append({"url": EXT_REGEX, "valueString": _REGEX[f.validation]})
    out.extend(_bounds(f, kind))
    if f.field_type == "slider":
        out.append({"url": EXT_SLIDER_STEP, "valueInteger": 1})
    unit = _mapped_unit(f, ctx) if kind in ("integer", "decimal") else None
    if unit:
        out.append({"url": EXT_UNIT, "valueCoding": unit})
    if f.field_type == "calc":
        _calculated(f, out, ctx)
    if has_tag(f, "@HIDDEN"):
        out.append({"url": EXT_HIDDEN, "valueBoolean": True})
    out.append(_redcap_extension(f, ctx.base))
    return out


def _redcap_extension(f: Field, base: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"url": "fieldType", "valueCode": f.field_type}]
    if f.validation and f.field_type == "text":
        parts.append({"url": "validation", "valueString": f.validation})
    if f.identifier:
        parts.append({"url": "identifier", "valueBoolean": True})
    return {"url": redcap_field_extension_url(base), "extension": parts}


def _bounds(f: Field, kind: str) -> list[dict[str, Any]]:
    """minValue/maxValue from the dictionary (a slider defaults to REDCap's 0-100)."""
    low, high = f.validation_min, f.validation_max
    if f.field_type == "slider":
        low, high = low or "0", high or "100"
    out = []
    for url, raw in ((EXT_MIN, low), (EXT_MAX, high)):
        value = _bound_value(f, kind, raw)
        if value is not None:
            out.append({"url": url, **value})
    return out


def _bound_value(f: Field, kind: str, raw: str) -> dict[str, Any] | None:
    if not raw or raw.lower() in ("today", "now"):
        return None  # relative bounds have no fixed value in a Questionnaire
    try:
        if kind == "integer":
            return {"valueInteger": int(raw)}
        if kind == "decimal":
            return {"valueDecimal": _json_number(raw)}
    except ValueError as exc:
        raise DictionaryError(f.name, f"min/max {raw!r} is not a number") from exc
    if kind == "date" and _ISO_DATE.match(raw):
        return {"valueDate": raw}
    # dateTime bounds would need a timezone the dictionary does not have; time bounds are rare.
    logger.debug("field %s: bound %r not expressed for item type %s", f.name, raw, kind)
    return None


def _json_number(text: str) -> int | float:
    """A REDCap number as a JSON number (int when it has no fraction, keeping it exact)."""
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


def _answer_options(f: Field, base: str) -> list[dict[str, Any]]:
    system = choice_system(base, f)
    default = _DEFAULT.search(f.annotation)
    options = []
    for choice in f.choices:
        option: dict[str, Any] = {"valueCoding": {
            "system": system, "code": choice.code, "display": _plain(choice.label) or choice.code}}
        if default and default.group(2) == choice.code:
            option["initialSelected"] = True
        options.append(option)
    return options


def _children(f: Field) -> list[dict[str, Any]]:
    out = []
    if f.field_type == "slider" and f.choices_or_calc.strip():
        labels = " | ".join(p.strip() for p in f.choices_or_calc.split("|"))
        out.append({"linkId": f"{f.name}-labels", "text": f"Scale (low to high): {labels}",
                    "type": "display"})
    if f.note.strip():
        out.append({"extension": [_control("lower")], "linkId": f"{f.name}-note",
                    "text": _plain(f.note), "type": "display"})
    return out


# --- mapping (optional) -------------------------------------------------------------------------


def _measure(f: Field, ctx: _Ctx) -> Any:
    if ctx.mapping is None:
        return None
    measure = ctx.mapping.by_field.get(f.name)
    return None if measure is None or measure.target == "excluded" else measure


def _mapped_codes(f: Field, ctx: _Ctx) -> list[dict[str, str]]:
    measure = _measure(f, ctx)
    if measure is None:
        return []
    local = ctx.mapping.study.codesystem.url
    return [{"system": c.system_url(local), "code": c.code, "display": c.display}
            for c in measure.codes]


def _mapped_unit(f: Field, ctx: _Ctx) -> dict[str, str] | None:
    measure = _measure(f, ctx)
    if measure is None or not measure.unit:
        return None
    return {"system": UCUM, "code": measure.unit, "display": measure.unit_display or measure.unit}


# --- branching logic -> enableWhen --------------------------------------------------------------


def _enable_when(f: Field, item: dict[str, Any], ctx: _Ctx) -> None:
    logic = f.branching_logic.strip()
    if not logic:
        return
    reason = _try_enable_when(f, logic, item, ctx)
    if reason is None:
        return
    ctx.build.unsupported.append(UnsupportedLogicReport(f.name, logic, reason))
    logger.info("field %s: branching logic not expressed as enableWhen: %s", f.name, reason)
    marker = {"url": "unsupportedBranchingLogic", "valueString": logic}
    if item["type"] == "display":
        item.setdefault("extension", []).append(
            {"url": redcap_field_extension_url(ctx.base), "extension": [marker]})
    else:
        item["extension"][-1]["extension"].append(marker)


def _try_enable_when(f: Field, logic: str, item: dict[str, Any], ctx: _Ctx) -> str | None:
    """Fill item.enableWhen/enableBehavior, or return why the logic cannot be expressed."""
    try:
        result = to_enable_when(parse_logic(logic, field=f.name), ctx.dictionary)
    except LogicError as exc:
        return f"cannot parse: {exc.problem}"
    if result.unsupported:
        return result.unsupported
    conditions = []
    for cond in result.conditions:
        question = cond["question"]
        if question not in ctx.link_ids:
            return f"[{question}] is not a question of instrument {ctx.form!r}"
        answer = _answer(ctx.dictionary.field(question), cond["answer"], ctx.base)
        if isinstance(answer, str):
            return answer
        conditions.append({"question": question, "operator": cond["operator"], **answer})
    item["enableWhen"] = conditions
    if len(conditions) > 1:
        item["enableBehavior"] = result.behavior or "all"
    return None


def _answer(target: Field, answer: Mapping[str, Any], base: str) -> dict[str, Any] | str:
    """The answer[x] of one condition, typed like the target item; a string is a failure reason."""
    kind, value = answer["type"], answer["value"]
    if kind == "coding":
        if not target.choices:
            return f"[{target.name}] is not a choice field"
        if target.choice_label(str(value)) is None:
            return f"[{target.name}] has no choice {value!r}"
        coding = {"system": choice_system(base, target), "code": str(value)}
        label = target.choice_label(str(value))
        if label:
            coding["display"] = _plain(label)
        return {"answerCoding": coding}
    target_type = item_type(target)
    if kind == "string" and target_type == "time":
        if not re.fullmatch(r"\d{2}:\d{2}(:\d{2})?", str(value)):
            return f"[{target.name}] is a time but is compared with {value!r}"
        return {"answerTime": value if len(value) == 8 else f"{value}:00"}
    if kind in ("date", "dateTime"):
        if not _ISO_DATE.match(str(value)):
            # A time without a timezone is not a valid FHIR dateTime.
            return f"[{target.name}] is compared with {value!r}, not a YYYY-MM-DD date"
        return {f"answer{kind[0].upper()}{kind[1:]}": value}
    keys = {"integer": "answerInteger", "decimal": "answerDecimal", "string": "answerString",
            "boolean": "answerBoolean"}
    if kind == "decimal" and isinstance(value, float) and value.is_integer():
        value = int(value)  # 2.0 and 2 are the same decimal; keep the JSON short
    return {keys[kind]: value}


# --- calc -> SDC calculatedExpression -----------------------------------------------------------


class _NoFhirPath(Exception):
    pass


def _calculated(f: Field, extensions: list[dict[str, Any]], ctx: _Ctx) -> None:
    formula = f.choices_or_calc.strip()
    try:
        expression = to_fhirpath(parse_logic(formula, field=f.name), ctx.link_ids)
    except (LogicError, _NoFhirPath) as exc:
        reason = exc.problem if isinstance(exc, LogicError) else str(exc)
        ctx.build.untranslated_calcs.append(UnsupportedLogicReport(f.name, formula, reason))
        return
    extensions.append({"url": EXT_CALCULATED, "valueExpression": {
        "description": f"REDCap: {formula}", "language": "text/fhirpath",
        "expression": expression}})


def to_fhirpath(expr: Expr, link_ids: set[str]) -> str:
    """FHIRPath for simple REDCap arithmetic (+ - * / ^, round, abs, sqrt) of this form's fields."""
    match expr:
        case Literal(value=v) if isinstance(v, int | float) and not isinstance(v, bool):
            return repr(v)
        case FieldRef(field=name, event=None, checkbox_code=None, instance=None):
            if name not in link_ids:
                raise _NoFhirPath(f"[{name}] is not on this instrument")
            return f"%resource.repeat(item).where(linkId='{name}').answer.value"
        case BinaryOp(op="^", left=a, right=b):
            return f"({to_fhirpath(a, link_ids)}).power({to_fhirpath(b, link_ids)})"
        case BinaryOp(op=op, left=a, right=b):
            return f"({to_fhirpath(a, link_ids)} {op} {to_fhirpath(b, link_ids)})"
        case Negate(operand=a):
            return f"(0 - {to_fhirpath(a, link_ids)})"
        case Call(name="round", args=(a,)):
            return f"({to_fhirpath(a, link_ids)}).round(0)"
        case Call(name="round", args=(a, Literal(value=int() as places))):
            return f"({to_fhirpath(a, link_ids)}).round({places})"
        case Call(name="abs" | "sqrt" as fn, args=(a,)):
            return f"({to_fhirpath(a, link_ids)}).{fn}()"
        case Call(name=fn):
            raise _NoFhirPath(f"function {fn}() has no FHIRPath translation here")
    raise _NoFhirPath(f"{type(expr).__name__} has no FHIRPath translation here")
