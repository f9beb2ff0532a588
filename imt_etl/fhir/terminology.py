"""Verified-code table, LOINC/SNOMED check digits and a UCUM syntax check for the mappings.

The table (`mappings/terminology/verified_codes.csv`) says which standard codes were verified
for which concept (derived from /work/shared/reference/loinc_verified.csv); `wrong_codes.csv` lists
codes that look plausible but are wrong for a concept (e.g. 19926-5 for FEV1 % predicted).

UCUM approach: no UCUM library is available offline, so `ucum_problem` parses the UCUM grammar
(c/s case-sensitive form: terms joined by `.` and `/`, parentheses, integer exponents, curly-brace
annotations, integer factors) and accepts only atoms from a small allow-list of units that myositis
and respiratory studies use, each with its UCUM "metric" flag deciding whether SI prefixes may
precede it. So `cm[H2O]`, `ukat/L`, `kg/m2`, `/min` and `{score}` pass; `cmH2O`, `mmHg`, `IU/L`
and `bpm` do not. Extend `UCUM_ATOMS` when a study needs a new unit.
"""

from __future__ import annotations

import csv
import fnmatch
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from imt_etl.errors import MappingError

logger = logging.getLogger(__name__)

SYSTEM_URLS = {
    "loinc": "http://loinc.org",
    "snomed": "http://snomed.info/sct",
    "ucum": "http://unitsofmeasure.org",
}
STANDARD_SYSTEMS = frozenset({"loinc", "snomed"})
USES = frozenset({"preferred", "alternative", "low_confidence", "none"})
# Rows with these uses may be put in a mapping; low-confidence rows are documented but refused.
USABLE = frozenset({"preferred", "alternative"})
VERIFIED_FILE = "verified_codes.csv"
WRONG_FILE = "wrong_codes.csv"
VERIFIED_COLUMNS = (
    "concept", "system", "code", "use", "measure", "display", "ucum", "ucum_also",
    "ucum_note", "evidence", "confidence",
)
WRONG_COLUMNS = ("concept", "system", "code", "reason")

_LOINC_RE = re.compile(r"^(\d{1,7})-(\d)$")
_SCTID_RE = re.compile(r"^[1-9]\d{5,17}$")


# --- check digits -------------------------------------------------------------------------------


def loinc_check_digit(body: str) -> int:
    """The LOINC mod-10 check digit of a code's numeric body (e.g. "2157" -> 6).

    LOINC's algorithm: from the right, double every other digit starting with the rightmost, sum
    the digits of the products and the untouched digits; the check digit tops the sum up to a
    multiple of 10.
    """
    if not body.isdigit():
        raise ValueError(f"LOINC code body must be digits, got {body!r}")
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
        total += digit // 10 + digit % 10
    return (10 - total % 10) % 10


def loinc_problem(code: str) -> str | None:
    """Why `code` is not a well-formed LOINC code (format `NNNNN-N`, check digit), or None."""
    match = _LOINC_RE.match(code)
    if not match:
        return f"LOINC code {code!r} is malformed (expected digits, '-', one check digit)"
    expected = loinc_check_digit(match.group(1))
    if int(match.group(2)) != expected:
        return f"LOINC code {code!r} has a wrong check digit (expected {match.group(1)}-{expected})"
    return None


# Verhoeff dihedral-group tables (SNOMED CT identifiers end in a Verhoeff check digit).
_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6), (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4), (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2), (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)


def verhoeff_valid(number: str) -> bool:
    """True if the digit string ends in a correct Verhoeff check digit."""
    check = 0
    for position, char in enumerate(reversed(number)):
        check = _D[check][_P[position % 8][int(char)]]
    return check == 0


def snomed_problem(code: str) -> str | None:
    """Why `code` is not a well-formed SNOMED CT concept id (partition, Verhoeff), or None."""
    if not _SCTID_RE.match(code):
        return f"SNOMED CT id {code!r} is malformed (expected 6-18 digits, no leading zero)"
    # The two digits before the check digit are the partition: 00 or 10 for a concept id.
    if code[-3:-1] not in ("00", "10"):
        return f"SNOMED CT id {code!r} is not a concept id (partition {code[-3:-1]!r})"
    if not verhoeff_valid(code):
        return f"SNOMED CT id {code!r} has a wrong Verhoeff check digit"
    return None


# --- UCUM ---------------------------------------------------------------------------------------

# Allow-listed UCUM atoms -> whether the atom is "metric" (may take an SI prefix), per UCUM tables.
UCUM_ATOMS: dict[str, bool] = {
    "m": True, "g": True, "s": True, "L": True, "l": True, "mol": True, "kat": True, "U": True,
    "Pa": True, "bar": True, "cal": True, "[IU]": True, "[iU]": True, "m[H2O]": True,
    "m[Hg]": True, "K": True, "Cel": True, "eq": True, "osm": True,
    "min": False, "h": False, "d": False, "wk": False, "mo": False, "a": False, "%": False,
    "[arb'U]": False, "[ppm]": False,
}
# SI prefixes, longest first so that "da" wins over "d".
UCUM_PREFIXES = (
    "da", "Y", "Z", "E", "P", "T", "G", "M", "k", "h", "d", "c", "m", "u", "n", "p", "f", "a",
    "z", "y",
)
_ANNOTATION_RE = re.compile(r"\{[!-z|~]*\}")  # ASCII 33-126 except the braces themselves
_SIMPLE_RE = re.compile(r"(?P<unit>[^./(){}]*?)(?P<exp>[+-]?\d+)?$")


def _atom_ok(symbol: str) -> bool:
    if symbol in UCUM_ATOMS:
        return True
    for prefix in UCUM_PREFIXES:
        rest = symbol[len(prefix):]
        if symbol.startswith(prefix) and UCUM_ATOMS.get(rest):
            return True
    return False


class _UcumParser:
    """Recursive-descent parser for the UCUM term grammar over the allow-listed atoms."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def fail(self, problem: str) -> ValueError:
        return ValueError(f"{problem} at position {self.pos}")

    def parse(self) -> None:
        if not self.text:
            raise self.fail("empty unit")
        if self.text.startswith("/"):
            self.pos = 1
        self.term()
        if self.pos != len(self.text):
            raise self.fail(f"unexpected {self.text[self.pos]!r}")

    def term(self) -> None:
        self.component()
        while self.pos < len(self.text) and self.text[self.pos] in "./":
            self.pos += 1
            self.component()

    def component(self) -> None:
        if self.pos >= len(self.text):
            raise self.fail("missing unit")
        char = self.text[self.pos]
        if char == "(":
            self.pos += 1
            self.term()
            if self.pos >= len(self.text) or self.text[self.pos] != ")":
                raise self.fail("unclosed '('")
            self.pos += 1
            return
        if char == "{":
            self.annotation()
            return
        self.simple()
        if self.pos < len(self.text) and self.text[self.pos] == "{":
            self.annotation()

    def annotation(self) -> None:
        match = _ANNOTATION_RE.match(self.text, self.pos)
        if not match:
            raise self.fail("bad annotation (only printable ASCII inside '{...}')")
        self.pos = match.end()

    def simple(self) -> None:
        end = self.pos
        # Square brackets belong to the atom (m[H2O]), so scan past them as a unit.
        while end < len(self.text) and self.text[end] not in "./(){}":
            if self.text[end] == "[":
                close = self.text.find("]", end)
                if close < 0:
                    raise self.fail("unclosed '['")
                end = close
            end += 1
        token = self.text[self.pos:end]
        match = _SIMPLE_RE.fullmatch(token)
        symbol = match.group("unit") if match else token
        if symbol == "" and match and match.group("exp"):
            symbol = ""  # a pure integer factor such as the 10 in "10.L" is allowed
        elif not _atom_ok(symbol):
            raise self.fail(f"unknown or non-allow-listed unit atom {symbol!r}")
        self.pos = end


def ucum_problem(unit: str) -> str | None:
    """Why `unit` is not an allow-listed UCUM expression, or None if it is."""
    if not isinstance(unit, str):
        return f"unit must be a string, got {type(unit).__name__}"
    if unit != unit.strip() or " " in unit:
        return f"UCUM unit {unit!r} contains whitespace"
    try:
        _UcumParser(unit).parse()
    except ValueError as exc:
        return f"{unit!r} is not a UCUM unit ({exc})"
    return None


# --- the verified table -------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedCode:
    """One row of the verified table: a concept and (unless `use` is none) its standard code."""

    concept: str
    system: str
    code: str
    use: str
    measure: str
    display: str
    units: tuple[str, ...]
    ucum_note: str
    evidence: str
    confidence: str

    @property
    def usable(self) -> bool:
        return self.use in USABLE


@dataclass(frozen=True)
class WrongCode:
    """A code that must not be used for a concept; `code` may be a LOINC range `A..B`."""

    concept: str  # fnmatch pattern, e.g. rand36_*
    system: str
    code: str
    reason: str

    def matches(self, concept: str, system: str, code: str) -> bool:
        if system != self.system or not fnmatch.fnmatchcase(concept, self.concept):
            return False
        if ".." not in self.code:
            return code == self.code
        low, high = (part.split("-")[0] for part in self.code.split(".."))
        body = code.split("-")[0]
        return body.isdigit() and int(low) <= int(body) <= int(high)


@dataclass(frozen=True)
class Terminology:
    """The verified table and the wrong-code list, with the checks the mapping loader runs."""

    codes: tuple[VerifiedCode, ...]
    wrong: tuple[WrongCode, ...]
    source: str

    def rows_for_code(self, system: str, code: str) -> list[VerifiedCode]:
        return [r for r in self.codes if r.system == system and r.code == code]

    def rows_for_concept(self, concept: str) -> list[VerifiedCode]:
        return [r for r in self.codes if r.concept == concept]

    def verified_concepts(self, system: str, code: str) -> list[str]:
        """Concepts for which `code` is verified and usable."""
        return [r.concept for r in self.rows_for_code(system, code) if r.usable]

    def wrong_for(self, concept: str, system: str, code: str) -> WrongCode | None:
        return next((w for w in self.wrong if w.matches(concept, system, code)), None)

    def code_problem(self, concept: str, system: str, code: str) -> str | None:
        """Why `system|code` must not be used for `concept`, or None if it may."""
        wrong = self.wrong_for(concept, system, code)
        if wrong is not None:
            return f"{system} {code} is marked wrong for concept {concept!r}: {wrong.reason}"
        if system not in STANDARD_SYSTEMS:
            return None
        form = loinc_problem(code) if system == "loinc" else snomed_problem(code)
        if form:
            return form
        rows = self.rows_for_code(system, code)
        if not rows:
            return f"{system} {code} is not in the verified table ({self.source})"
        usable = [r for r in rows if r.usable]
        if not usable:
            grades = ", ".join(sorted({r.confidence for r in rows}))
            return f"{system} {code} has only low-confidence evidence ({grades}); use a local code"
        concepts = sorted({r.concept for r in usable})
        if concept not in concepts:
            return f"{system} {code} is verified for concept(s) {concepts}, not {concept!r}"
        return None

    def unit_problem(
        self, concept: str, codings: Iterable[tuple[str, str]], unit: str
    ) -> str | None:
        """Why `unit` contradicts the table for these codes (or for the concept), or None."""
        for system, code in codings:
            rows = [r for r in self.rows_for_code(system, code) if r.concept == concept]
            allowed = sorted({u for r in rows for u in r.units})
            if allowed and unit not in allowed:
                return f"unit {unit!r} contradicts the verified unit {allowed} for {system} {code}"
        allowed = sorted({u for r in self.rows_for_concept(concept) for u in r.units})
        if allowed and unit not in allowed:
            return f"unit {unit!r} contradicts the verified unit {allowed} for concept {concept!r}"
        return None


def _split_units(text: str) -> tuple[str, ...]:
    return tuple(u.strip() for u in text.split(";") if u.strip())


def _read_rows(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise MappingError(path.name, "<header>", f"missing columns {missing}")
            rows = []
            for line, row in enumerate(reader, start=2):
                if None in row or None in row.values():
                    raise MappingError(path.name, f"row {line}", "wrong number of columns")
                rows.append({k: v.strip() for k, v in row.items()})
            return rows
    except OSError as exc:
        raise MappingError(str(path), "<file>", f"cannot read: {exc.strerror}") from exc


def _verified_row(path: Path, line: int, row: dict[str, str]) -> VerifiedCode:
    where = f"row {line}"
    if row["use"] not in USES:
        raise MappingError(path.name, f"{where}.use", f"must be one of {sorted(USES)}")
    if (row["use"] == "none") != (not row["code"]):
        raise MappingError(path.name, f"{where}.code", "a code is required unless use is none")
    if row["code"]:
        problem = (
            f"unknown system {row['system']!r}" if row["system"] not in STANDARD_SYSTEMS
            else loinc_problem(row["code"]) if row["system"] == "loinc"
            else snomed_problem(row["code"])
        )
        if problem:
            raise MappingError(path.name, f"{where}.code", problem)
    units = (row["ucum"],) if row["ucum"] else ()
    units += _split_units(row["ucum_also"])
    for unit in units:
        if problem := ucum_problem(unit):
            raise MappingError(path.name, f"{where}.ucum", problem)
    return VerifiedCode(
        concept=row["concept"], system=row["system"], code=row["code"], use=row["use"],
        measure=row["measure"], display=row["display"], units=units, ucum_note=row["ucum_note"],
        evidence=row["evidence"], confidence=row["confidence"],
    )


def load_terminology(folder: Path) -> Terminology:
    """Read and check verified_codes.csv and wrong_codes.csv from `folder`."""
    verified_path, wrong_path = folder / VERIFIED_FILE, folder / WRONG_FILE
    codes = tuple(
        _verified_row(verified_path, line, row)
        for line, row in enumerate(_read_rows(verified_path, VERIFIED_COLUMNS), start=2)
    )
    wrong = []
    for line, row in enumerate(_read_rows(wrong_path, WRONG_COLUMNS), start=2):
        if not row["concept"] or not row["code"] or not row["reason"]:
            problem = "concept, code and reason are required"
            raise MappingError(wrong_path.name, f"row {line}", problem)
        wrong.append(WrongCode(row["concept"], row["system"], row["code"], row["reason"]))
    logger.debug("terminology: %d verified rows, %d wrong-code rules", len(codes), len(wrong))
    return Terminology(codes, tuple(wrong), str(verified_path))
