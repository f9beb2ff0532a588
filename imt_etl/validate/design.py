"""Findings about the project's design itself: branching logic or a calculation that does not
parse or names an unknown field. REDCap normally refuses these, so they are rare; when one slips
through, the data manager sees it in the quality report instead of a check silently skipped."""

from __future__ import annotations

from imt_etl.errors import LogicError
from imt_etl.redcap.dictionary import DataDictionary, Field
from imt_etl.redcap.logic import parse_logic, referenced_fields
from imt_etl.validate.quarantine import WARNING, Finding

LOGIC_RULE = "dict.logic_unchecked"


def design_findings(dictionary: DataDictionary, forms: set[str]) -> list[Finding]:
    found: list[Finding] = []
    for f in dictionary.fields:
        if f.form not in forms:
            continue
        if f.branching_logic.strip():
            found += _logic(f, f.branching_logic, "branching logic", dictionary)
        if f.field_type == "calc":
            found += _logic(f, f.choices_or_calc, "calculation", dictionary)
    return found


def _finding(rule: str, f: Field, value: str, message: str) -> Finding:
    return Finding(rule, WARNING, f.form, "", None, None, None, f.name, value, message)


def _logic(f: Field, text: str, what: str, dictionary: DataDictionary) -> list[Finding]:
    # Branching logic drives the hidden/required checks; a calculation only the Questionnaire.
    effect = ("values of this field are not checked against it" if what == "branching logic"
              else "the Questionnaire carries it as text only")
    try:
        expr = parse_logic(text, field=f.name)
    except LogicError as exc:
        return [_finding(LOGIC_RULE, f, text, f"The {what} of field {f.name!r} cannot be read "
                         f"({exc.problem}): {effect} until the data dictionary is fixed")]
    unknown = sorted(name for name in referenced_fields(expr) if not dictionary.has_field(name))
    if unknown:
        return [_finding(LOGIC_RULE, f, text, f"The {what} of field {f.name!r} names "
                         f"{', '.join(repr(u) for u in unknown)}, not in the data dictionary: "
                         f"{effect} until the data dictionary is fixed")]
    return []
