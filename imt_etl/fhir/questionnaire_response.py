"""FHIR R4 QuestionnaireResponse from one raw REDCap row, and the inverse (answers -> REDCap).

Decisions:
- Answers are typed like their Questionnaire item: valueCoding (choices; a checkbox gives one
  answer per ticked option), valueInteger, valueDecimal (a JSON number: "2.60" becomes 2.6, so
  the inverse gives "2.6"; numbers round-trip by value, fixed-dp validations by text),
  valueDate, valueDateTime (REDCap's naive server time put in `timezone`, e.g. Europe/Warsaw:
  FHIR needs an offset), valueTime (seconds added), valueString, valueAttachment (title = file
  name). Empty values are omitted; a group with no answered item is omitted.
- Missing-data codes (the project's `missing_data_codes`, e.g. UNK) become an answer valueCoding:
  in HL7 v3 NullFlavor (http://terminology.hl7.org/CodeSystem/v3-NullFlavor) when the REDCap code
  is a NullFlavor code (UNK, NASK, NA, ASKU, NI, ...; REDCap's defaults mostly are), otherwise in
  `{canonical_base}/CodeSystem/redcap-missing-data-codes`. The code is kept verbatim, so the
  inverse gives the REDCap value back. Fields tagged @NOMISSING never read a value as a code.
- Items disabled by their enableWhen (evaluated on this response's answers, FHIR semantics:
  `!=` means "no answer equals") are omitted, as R4 requires; dropping a non-empty value is
  logged as a warning.
- A value that does not fit its field type (e.g. "8O" in an integer field, a code that is not a
  choice) raises FhirBuildError: validation quarantines such rows before FHIR is built.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from imt_etl.errors import FhirBuildError
from imt_etl.fhir.questionnaire import REDCAP_FIELD_EXT, choice_system, has_tag, item_type
from imt_etl.redcap.dictionary import Choice, DataDictionary, Field, checkbox_column

logger = logging.getLogger(__name__)

NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
NULL_FLAVOR_CODES = frozenset({
    "NI", "INV", "DER", "OTH", "NINF", "PINF", "UNC", "MSK", "NA", "UNK", "ASKU", "NAV", "NASK",
    "NAVU", "QS", "TRC", "NP",
})
MISSING_CODES_CS = "CodeSystem/redcap-missing-data-codes"  # appended to the canonical base

_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_TZ = re.compile(r"T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
_DP = re.compile(r"^number_(\d)dp")


def canonical_base_of(questionnaire: Mapping[str, Any]) -> str:
    url = str(questionnaire.get("url", ""))
    base, sep, _ = url.rpartition("/Questionnaire/")
    if not sep:
        raise ValueError(f"Questionnaire url {url!r} is not <base>/Questionnaire/<form>")
    return base


def missing_code_system(canonical_base: str, code: str) -> str:
    return NULL_FLAVOR if code in NULL_FLAVOR_CODES else f"{canonical_base}/{MISSING_CODES_CS}"


def is_missing_code_system(system: str) -> bool:
    return system == NULL_FLAVOR or system.endswith(f"/{MISSING_CODES_CS}")


# --- REDCap value -> answers ----------------------------------------------------------------


class _FieldPlan:
    """One data item's field with its lookups worked out once per form, not once per row."""

    def __init__(self, f: Field, base: str, missing: Sequence[Choice]):
        self.field, self.name, self.kind = f, f.name, item_type(f)
        self.is_checkbox = f.is_checkbox
        self.system = choice_system(base, f) if self.kind == "choice" else ""
        # A dict answers "which choice is this code" at once; setdefault keeps the first match,
        # as the scan over the list did.
        self.choices: dict[str, Choice] = {}
        for c in f.choices:
            self.choices.setdefault(c.code, c)
        own = () if has_tag(f, "@NOMISSING") else tuple(missing)
        self.missing: dict[str, Choice] = {}
        for m in own:
            self.missing.setdefault(m.code, m)
        self.boxes = tuple((checkbox_column(f.name, c.code), c) for c in f.choices)
        self.missing_boxes = tuple((checkbox_column(f.name, m.code), m) for m in own)
        self.box_columns = tuple(col for col, _ in self.boxes + self.missing_boxes)


class _Reader:
    """Turns one field's raw value(s) into typed answers, raising FhirBuildError on a misfit."""

    def __init__(self, base: str, tz: ZoneInfo, record: str):
        self.base, self.tz, self.record = base, tz, record

    def answers(self, p: _FieldPlan, row: Mapping[str, str]) -> list[dict[str, Any]]:
        if p.is_checkbox:
            return self.ticked(p, [_value(row, col) for col in p.box_columns])
        raw = row.get(p.name)
        return self.value(p, raw if raw.__class__ is str else _value(row, p.name))

    def value(self, p: _FieldPlan, raw: str) -> list[dict[str, Any]]:
        """The answers of a (non-checkbox) field's raw string."""
        raw = raw.strip()
        if raw == "":
            return []
        code = p.missing.get(raw)
        if code is not None:
            return [{"valueCoding": self._missing(code)}]
        return [self._typed(p, raw)]

    def ticked(self, p: _FieldPlan, values: Sequence[str]) -> list[dict[str, Any]]:
        """The answers of a checkbox field from its columns' strings (p.box_columns order)."""
        ticks = [v.strip() == "1" for v in values]
        out = [{"valueCoding": self._coding(p, c)}
               for (_, c), tick in zip(p.boxes, ticks, strict=False) if tick]
        return out + [{"valueCoding": self._missing(m)}
                      for (_, m), tick in zip(p.missing_boxes, ticks[len(p.boxes):],
                                              strict=True) if tick]

    def _missing(self, code: Choice) -> dict[str, str]:
        return {"system": missing_code_system(self.base, code.code), "code": code.code,
                "display": code.label or code.code}

    def _coding(self, p: _FieldPlan, choice: Choice) -> dict[str, str]:
        return {"system": p.system, "code": choice.code, "display": choice.label or choice.code}

    def _fail(self, f: Field, raw: str, what: str) -> FhirBuildError:
        return FhirBuildError(self.record, f.name, f"value {raw!r} is not {what}")

    def _typed(self, p: _FieldPlan, raw: str) -> dict[str, Any]:
        kind, f = p.kind, p.field
        if kind == "choice":
            choice = p.choices.get(raw)
            if choice is None:
                raise self._fail(f, raw, f"one of the codes {[c.code for c in f.choices]}")
            return {"valueCoding": self._coding(p, choice)}
        if kind == "integer":
            if not _INTEGER.match(raw.strip()):
                raise self._fail(f, raw, "an integer")
            return {"valueInteger": int(raw)}
        if kind == "decimal":
            return {"valueDecimal": self._decimal(f, raw)}
        if kind == "date":
            try:
                return {"valueDate": date.fromisoformat(raw.strip()).isoformat()}
            except ValueError:
                raise self._fail(f, raw, "a YYYY-MM-DD date") from None
        if kind == "dateTime":
            return {"valueDateTime": self._datetime(f, raw)}
        if kind == "time":
            try:
                return {"valueTime": time.fromisoformat(raw.strip()).strftime("%H:%M:%S")}
            except ValueError:
                raise self._fail(f, raw, "a HH:MM time") from None
        if kind == "attachment":
            return {"valueAttachment": {"title": raw}}
        return {"valueString": raw}

    def _decimal(self, f: Field, raw: str) -> int | float:
        text = raw.strip()
        if "comma_decimal" in f.validation:
            text = text.replace(",", ".")
        if not _NUMBER.match(text):
            raise self._fail(f, raw, "a number")
        if _INTEGER.match(text):
            return int(text)
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise self._fail(f, raw, "a finite number")
        return value

    def _datetime(self, f: Field, raw: str) -> str:
        try:
            local = datetime.fromisoformat(raw.strip().replace(" ", "T"))
        except ValueError:
            raise self._fail(f, raw, "a YYYY-MM-DD HH:MM date and time") from None
        if local.tzinfo is not None:
            raise self._fail(f, raw, "a REDCap (timezone-free) date and time")
        return local.replace(tzinfo=self.tz).isoformat(timespec="seconds")


def _value(row: Mapping[str, str], key: str) -> str:
    value = row.get(key)
    if value.__class__ is str:  # the usual case: skip str()
        return value.strip()
    return "" if value is None else str(value).strip()


# --- enableWhen evaluation ------------------------------------------------------------------


def _walk(items: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for item in items:
        yield item
        yield from _walk(item.get("item", []))


def _answer_value(answer: Mapping[str, Any]) -> tuple[str, Any]:
    for key, value in answer.items():
        if key.startswith("value") or key.startswith("answer"):
            kind = key.removeprefix("value").removeprefix("answer")
            if kind == "Coding":
                return kind, (value.get("system"), value.get("code"))
            return kind, value
    return "", None


class _Condition:
    """One enableWhen entry with its wanted answer unpacked once per questionnaire."""

    def __init__(self, condition: Mapping[str, Any]):
        self.question, self.op = condition["question"], condition["operator"]
        self.exists = bool(condition.get("answerBoolean"))
        self.kind, self.wanted = _answer_value(condition)

    def holds(self, answered: list[tuple[str, Any]]) -> bool:
        """`answered`: the question's answers as _answer_value pairs ([] when absent)."""
        op, kind, wanted = self.op, self.kind, self.wanted
        if op == "exists":
            return bool(answered) == self.exists
        values = [v for k, v in answered if k == kind or _numeric(k, kind)]
        if op == "=":
            return any(v == wanted for v in values)
        if op == "!=":
            return all(v != wanted for v in values)  # REDCap: a blank field is "<> '1'"
        checks = {"<": lambda a: a < wanted, "<=": lambda a: a <= wanted,
                  ">": lambda a: a > wanted, ">=": lambda a: a >= wanted}
        try:
            return any(checks[op](v) for v in values)
        except TypeError:
            return False


def _numeric(a: str, b: str) -> bool:
    return {a, b} <= {"Integer", "Decimal"}


class _Conditional:
    """An item with an enableWhen: its linkId, conditions and any/all behaviour."""

    def __init__(self, item: Mapping[str, Any]):
        self.link = item["linkId"]
        self.conditions = [_Condition(c) for c in item["enableWhen"]]
        self.any = item.get("enableBehavior") == "any"

    def holds(self, answered: Mapping[str, list[tuple[str, Any]]], enabled: set[str]) -> bool:
        results = [c.holds(answered.get(c.question, []) if c.question in enabled else [])
                   for c in self.conditions]
        return any(results) if self.any else all(results)


# --- the builder ----------------------------------------------------------------------------


class ResponsePlan:
    """What building a questionnaire's responses needs, worked out once for all of its rows:
    the data items with their fields' lookups, and the enableWhen conditions unpacked."""

    def __init__(self, questionnaire: Mapping[str, Any], dictionary: DataDictionary,
                 missing_codes: Sequence[Choice] = ()):
        self.questionnaire, self.dictionary = questionnaire, dictionary
        self.missing_codes = tuple(missing_codes)
        items = list(_walk(questionnaire.get("item", [])))
        self.links = [i["linkId"] for i in items]
        # Items without enableWhen always hold: only the conditional ones need evaluating.
        self.conditional = [_Conditional(i) for i in items if i.get("enableWhen")]
        self.always = {i["linkId"] for i in items if not i.get("enableWhen")}
        self.questions = {c.question for i in self.conditional for c in i.conditions}
        self.base = canonical_base_of(questionnaire)
        self.tree = _response_tree(questionnaire.get("item", []))
        self.fields = [(i["linkId"], _FieldPlan(dictionary.field(i["linkId"]), self.base,
                                                self.missing_codes))
                       for i in items if i["type"] not in ("group", "display")
                       and dictionary.has_field(i["linkId"])]

    @property
    def columnar(self) -> bool:
        """Whether `response_parts` can build this questionnaire's responses: each linkId
        names one item (a cell made once per distinct value then stands for its item)."""
        return len(set(self.links)) == len(self.links)

    def shape(self, enabled: set[str]) -> _Shape:
        """The response tree of the items in `enabled` with each data item as its position in
        `fields`; data items outside `fields` (no answers ever) left out."""
        index = {link: i for i, (link, _) in enumerate(self.fields)}

        def nodes(tree: list[_Node]) -> list[tuple[dict[str, Any], Any, int]]:
            out = []
            for link, head, children in tree:
                if link not in enabled:
                    continue
                if children is not None:
                    out.append((head, nodes(children), -1))
                elif link in index:
                    out.append((head, None, index[link]))
            return out

        return nodes(self.tree)

    def fits(self, questionnaire: Mapping[str, Any], dictionary: DataDictionary,
             missing_codes: Sequence[Choice]) -> bool:
        return (questionnaire is self.questionnaire and dictionary is self.dictionary
                and tuple(missing_codes) == self.missing_codes)

    def enabled(self, answers: Mapping[str, list[dict[str, Any]]]) -> set[str]:
        """linkIds whose enableWhen holds; a disabled item's answers count as absent (fixpoint)."""
        enabled = set(self.links)
        if not self.conditional:
            return enabled
        answered = {q: list(map(_answer_value, answers[q]))
                    for q in self.questions if q in answers}
        for _ in range(len(self.links) + 1):
            now = self.always | {i.link for i in self.conditional if i.holds(answered, enabled)}
            if now == enabled:
                return enabled
            enabled = now
        return enabled


def build_questionnaire_response(
    questionnaire: Mapping[str, Any],
    raw_row: Mapping[str, str],
    dictionary: DataDictionary,
    form: str,
    *,
    subject_ref: str,
    authored: str | None,
    id: str,
    encounter_ref: str | None = None,
    status: str | None = None,
    missing_codes: Sequence[Choice] = (),
    timezone: str = "UTC",
    record: str | None = None,
    plan: ResponsePlan | None = None,
) -> dict[str, Any]:
    """The QuestionnaireResponse of one (record, event, instance, form) raw export row.

    `raw_row` holds REDCap strings (checkboxes as `field___code` = "1"); `authored` is a FHIR
    dateTime with a timezone (None when unknown: then omitted); `status` defaults to completed
    when `<form>_complete` is 2, else in-progress; `missing_codes` are the project's
    missing-data codes; `timezone` (IANA) is the REDCap server's, applied to datetime values;
    `record` names the record in errors (default: the row's record id field); `plan`, the
    ResponsePlan of this questionnaire, dictionary and missing codes, saves redoing it per row.
    """
    record = record or _value(raw_row, dictionary.record_id_field) or id
    if authored is not None and not _TZ.search(authored):
        raise FhirBuildError(record, f"{form}_complete", f"authored {authored!r} has no timezone")
    if plan is None or not plan.fits(questionnaire, dictionary, missing_codes):
        plan = ResponsePlan(questionnaire, dictionary, missing_codes)
    reader = _Reader(plan.base, ZoneInfo(timezone), record)
    answers = {link: reader.answers(p, raw_row) for link, p in plan.fields}
    enabled = plan.enabled(answers)
    for link in sorted(k for k, v in answers.items() if v and k not in enabled):
        logger.warning("record %s, form %s: %s has a value but its enableWhen hides it; omitted",
                       record, form, link)
    resource: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "id": id,
        "questionnaire": f"{questionnaire['url']}|{questionnaire['version']}"
        if questionnaire.get("version") else questionnaire["url"],
        "status": status or _status(raw_row, form),
        "subject": {"reference": subject_ref},
    }
    if encounter_ref:
        resource["encounter"] = {"reference": encounter_ref}
    if authored is not None:  # unknown (the form records no date): omitted, never guessed
        resource["authored"] = authored
    items = _response_items(plan.tree, answers, enabled)
    if items:
        resource["item"] = items
    return resource


_Shape = list  # [(head, children shape or None, position in ResponsePlan.fields)]


def response_parts(plan: ResponsePlan, column: Callable[[str], list[str]], size: int, *,
                   form: str, records: Sequence[str], timezone: str = "UTC"
                   ) -> list[tuple[str, list[dict[str, Any]]]] | None:
    """(status, items) of each of `size` rows, as build_questionnaire_response gives them;
    `column(name)` is a raw column's strings, one per row ("" where absent); `records` name
    the rows' records in warnings.

    Built column by column: each field's distinct values become their answers and item once
    (shared by the rows holding them), and each distinct set of enabled items becomes a tree
    once. None when a value does not fit its field (or the plan is not `columnar`): the
    row-by-row builder then raises its error.
    """
    if not plan.columnar:
        return None
    reader = _Reader(plan.base, ZoneInfo(timezone), "")
    heads: dict[str, dict[str, Any]] = {}
    _heads(plan.tree, heads)
    keys: list[list[Any]] = []  # per field, per row: what its answers are made from
    answers_by_key: list[dict[Any, list]] = []  # per field: its answers of each key
    cells: list[list[dict[str, Any] | None]] = []  # per field, per row: its item, if answered
    try:
        for link, p in plan.fields:
            if p.is_checkbox:
                col: list[Any] = (list(zip(*map(column, p.box_columns), strict=True))
                                  if p.box_columns else [()] * size)
                answers_of = reader.ticked
            else:
                col = column(p.name)
                answers_of = reader.value
            head = heads.get(link)
            answers = {key: answers_of(p, key) for key in set(col)}
            items = {key: {**head, "answer": got} if got and head is not None else None
                     for key, got in answers.items()}
            keys.append(col)
            answers_by_key.append(answers)
            cells.append([items[k] for k in col])
    except FhirBuildError:
        return None
    complete = column(f"{form}_complete")
    statuses = {v: "completed" if v.strip() == "2" else "in-progress" for v in set(complete)}
    # The enabled items depend only on the questions' answers: worked out once per distinct set.
    questions = [i for i, (link, _) in enumerate(plan.fields) if link in plan.questions]
    question_keys = (list(zip(*(keys[i] for i in questions), strict=True)) if questions
                     else [()] * size)
    shapes: dict[tuple, tuple[Any, list[tuple[str, int]]]] = {}
    out = []
    for row, (items, qkey) in enumerate(zip(zip(*cells, strict=True) if cells else [()] * size,
                                            question_keys, strict=True)):
        found = shapes.get(qkey)
        if found is None:
            enabled = plan.enabled({plan.fields[i][0]: answers_by_key[i][k]
                                    for i, k in zip(questions, qkey, strict=True)})
            hidden = sorted((link, i) for i, (link, _) in enumerate(plan.fields)
                            if link not in enabled)
            found = shapes[qkey] = (_compiled(plan.shape(enabled)), hidden)
        shape, hidden = found
        for link, i in hidden:
            if answers_by_key[i][keys[i][row]]:
                logger.warning("record %s, form %s: %s has a value but its enableWhen hides "
                               "it; omitted", records[row], form, link)
        status = statuses[complete[row]]
        if shape.__class__ is tuple:  # no groups: the answered items at these positions
            out.append((status, [x for x in map(items.__getitem__, shape) if x is not None]))
        else:
            out.append((status, _fill(shape, items)))
    return out


def _compiled(shape: _Shape) -> _Shape | tuple[int, ...]:
    """A shape without groups as the tuple of its items' positions."""
    if any(children is not None for _, children, _ in shape):
        return shape
    return tuple(index for _, _, index in shape)


def _heads(nodes: list[_Node], out: dict[str, dict[str, Any]]) -> None:
    for link, head, children in nodes:
        out[link] = head
        if children is not None:
            _heads(children, out)


def _fill(shape: _Shape, cells: Sequence[dict[str, Any] | None]) -> list[dict[str, Any]]:
    out = []
    for head, children, index in shape:
        if children is None:
            item = cells[index]
            if item is not None:
                out.append(item)
        else:
            kids = _fill(children, cells)
            if kids:
                out.append({**head, "item": kids})
    return out


def response_has_timezone(authored: str) -> bool:
    """Whether `authored` ends in a timezone, as a response's authored must."""
    return _TZ.search(authored) is not None


def _status(row: Mapping[str, str], form: str) -> str:
    return "completed" if _value(row, f"{form}_complete") == "2" else "in-progress"


# An item of the response tree: (linkId, its entry head {linkId, text}, children or None for a
# data item). Display items never appear in a response, so the plan leaves them out.
_Node = tuple[str, dict[str, Any], "list[_Node] | None"]


def _response_tree(items: Sequence[Mapping[str, Any]]) -> list[_Node]:
    out: list[_Node] = []
    for item in items:
        if item["type"] == "display":
            continue
        head: dict[str, Any] = {"linkId": item["linkId"]}
        if item.get("text"):
            head["text"] = item["text"]
        children = _response_tree(item.get("item", [])) if item["type"] == "group" else None
        out.append((item["linkId"], head, children))
    return out


def _response_items(
    nodes: list[_Node], answers: Mapping[str, list[dict[str, Any]]], enabled: set[str],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for link, head, children in nodes:
        if link not in enabled:
            continue
        if children is not None:
            kids = _response_items(children, answers, enabled)
            if kids:
                out.append({**head, "item": kids})
        elif answers.get(link):
            out.append({**head, "answer": answers[link]})
    return out


# --- the inverse: answers -> REDCap values --------------------------------------------------


def answers_to_redcap(
    qr: Mapping[str, Any], questionnaire: Mapping[str, Any], *, timezone: str = "UTC"
) -> dict[str, str]:
    """REDCap export values from a response's answers (only non-empty ones, like a RecordRow).

    Field type and validation come from the items' redcap-field extension; checkbox answers
    give `field___code` = "1" (missing codes on a checkbox too, as REDCap exports them);
    datetimes are converted to `timezone` and written as REDCap's naive `YYYY-MM-DD HH:MM`.
    """
    spec = {i["linkId"]: _redcap_spec(i) for i in _walk(questionnaire.get("item", []))}
    tz = ZoneInfo(timezone)
    out: dict[str, str] = {}
    for item in _walk(qr.get("item", [])):
        link = item["linkId"]
        field_type, validation = spec.get(link, ("", ""))
        for answer in item.get("answer", []):
            key, value = _redcap_value(link, field_type, validation, answer, tz)
            out[key] = value
    return out


def _redcap_spec(item: Mapping[str, Any]) -> tuple[str, str]:
    for ext in item.get("extension", []):
        if ext.get("url", "").endswith(f"/{REDCAP_FIELD_EXT}"):
            parts = {e["url"]: next(v for k, v in e.items() if k.startswith("value"))
                     for e in ext.get("extension", [])}
            return str(parts.get("fieldType", "")), str(parts.get("validation", ""))
    return "", ""


def _redcap_value(
    link: str, field_type: str, validation: str, answer: Mapping[str, Any], tz: ZoneInfo
) -> tuple[str, str]:
    if "valueCoding" in answer:
        code = str(answer["valueCoding"]["code"])
        if field_type == "checkbox":
            return checkbox_column(link, code), "1"
        return link, code
    if "valueDecimal" in answer:
        return link, _format_decimal(answer["valueDecimal"], validation)
    if "valueDateTime" in answer:
        moment = datetime.fromisoformat(answer["valueDateTime"])
        if moment.tzinfo is not None:
            moment = moment.astimezone(tz).replace(tzinfo=None)
        seconds = validation.startswith("datetime_seconds")
        return link, moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    if "valueTime" in answer:
        value = str(answer["valueTime"])
        return link, value[:8] if validation == "time_hh_mm_ss" else value[:5]
    if "valueAttachment" in answer:
        return link, str(answer["valueAttachment"].get("title", ""))
    if "valueBoolean" in answer:
        return link, "1" if answer["valueBoolean"] else "0"
    for key in ("valueInteger", "valueDate", "valueString"):
        if key in answer:
            return link, str(answer[key])
    raise FhirBuildError("", link, f"answer {dict(answer)!r} has no supported value[x]")


def _format_decimal(value: int | float, validation: str) -> str:
    dp = _DP.match(validation)
    text = f"{value:.{int(dp.group(1))}f}" if dp else str(value)
    return text.replace(".", ",") if "comma_decimal" in validation else text
