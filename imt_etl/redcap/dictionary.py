"""The REDCap data dictionary (API `metadata`) as typed, immutable objects."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from imt_etl.errors import DictionaryError

# The 18 keys of a metadata row, in the order REDCap's API returns them.
METADATA_KEYS: tuple[str, ...] = (
    "field_name",
    "form_name",
    "section_header",
    "field_type",
    "field_label",
    "select_choices_or_calculations",
    "field_note",
    "text_validation_type_or_show_slider_number",
    "text_validation_min",
    "text_validation_max",
    "identifier",
    "branching_logic",
    "required_field",
    "custom_alignment",
    "question_number",
    "matrix_group_name",
    "matrix_ranking",
    "field_annotation",
)

# Column headers of REDCap's data-dictionary CSV (import format), same order as METADATA_KEYS.
CSV_HEADERS: tuple[str, ...] = (
    "Variable / Field Name",
    "Form Name",
    "Section Header",
    "Field Type",
    "Field Label",
    "Choices, Calculations, OR Slider Labels",
    "Field Note",
    "Text Validation Type OR Show Slider Number",
    "Text Validation Min",
    "Text Validation Max",
    "Identifier?",
    "Branching Logic (Show field only if...)",
    "Required Field?",
    "Custom Alignment",
    "Question Number (surveys only)",
    "Matrix Group Name",
    "Matrix Ranking?",
    "Field Annotation",
)

FIELD_TYPES = frozenset(
    {
        "text", "notes", "dropdown", "radio", "checkbox", "yesno", "truefalse", "calc",
        "slider", "descriptive", "file", "sql", "signature",
    }
)
# Types whose select_choices column lists "code, label" pairs.
CHOICE_TYPES = frozenset({"dropdown", "radio", "checkbox"})
FIXED_CHOICES = {
    "yesno": (("1", "Yes"), ("0", "No")),
    "truefalse": (("1", "True"), ("0", "False")),
}
# Field types that never hold data in a record export.
NO_DATA_TYPES = frozenset({"descriptive"})


@dataclass(frozen=True)
class Choice:
    code: str
    label: str


@dataclass(frozen=True)
class Field:
    """One row of the data dictionary, with its choices parsed."""

    name: str
    form: str
    field_type: str
    label: str = ""
    section_header: str = ""
    choices_or_calc: str = ""
    note: str = ""
    validation: str = ""
    validation_min: str = ""
    validation_max: str = ""
    identifier: bool = False
    branching_logic: str = ""
    required: bool = False
    custom_alignment: str = ""
    question_number: str = ""
    matrix_group: str = ""
    matrix_ranking: str = ""
    annotation: str = ""
    choices: tuple[Choice, ...] = field(default=(), compare=False)

    @property
    def is_checkbox(self) -> bool:
        return self.field_type == "checkbox"

    @property
    def has_data(self) -> bool:
        return self.field_type not in NO_DATA_TYPES

    @property
    def export_columns(self) -> list[str]:
        """Column names this field takes in a flat record export (checkboxes expand)."""
        if not self.has_data:
            return []
        if self.is_checkbox:
            return [checkbox_column(self.name, c.code) for c in self.choices]
        return [self.name]

    def choice_label(self, code: str) -> str | None:
        for choice in self.choices:
            if choice.code == code:
                return choice.label
        return None

    def to_metadata(self) -> dict[str, str]:
        """This field as a metadata row (the API's 18 string keys, in order)."""
        values = (
            self.name, self.form, self.section_header, self.field_type, self.label,
            self.choices_or_calc, self.note, self.validation, self.validation_min,
            self.validation_max, "y" if self.identifier else "", self.branching_logic,
            "y" if self.required else "", self.custom_alignment, self.question_number,
            self.matrix_group, self.matrix_ranking, self.annotation,
        )
        return dict(zip(METADATA_KEYS, values, strict=True))


def checkbox_column(field_name: str, code: str) -> str:
    """REDCap's export name for one checkbox option: `field___code` (lower case, '-' as '_')."""
    return f"{field_name}___{code.lower().replace('-', '_')}"


def parse_choices(field_name: str, text: str) -> tuple[Choice, ...]:
    """Parse `1, Yes | 0, No` into choices; a malformed item raises DictionaryError."""
    if not text.strip():
        raise DictionaryError(field_name, "choice field has no choices")
    choices: list[Choice] = []
    seen: set[str] = set()
    for item in text.split("|"):
        code, sep, label = item.partition(",")
        code, label = code.strip(), label.strip()
        if not sep or not code:
            raise DictionaryError(field_name, f"choice {item.strip()!r} is not 'code, label'")
        if code in seen:
            raise DictionaryError(field_name, f"choice code {code!r} appears twice")
        seen.add(code)
        choices.append(Choice(code, label))
    return tuple(choices)


def field_from_metadata(row: Mapping[str, str]) -> Field:
    """Build a Field from one metadata row, checking the type and the choices."""
    name = (row.get("field_name") or "").strip()
    if not name:
        raise DictionaryError("<blank>", "a row has no field_name")
    field_type = (row.get("field_type") or "").strip()
    if field_type not in FIELD_TYPES:
        raise DictionaryError(name, f"unknown field type {field_type!r}")
    raw_choices = row.get("select_choices_or_calculations") or ""
    if field_type in CHOICE_TYPES:
        choices = parse_choices(name, raw_choices)
    elif field_type in FIXED_CHOICES:
        choices = tuple(Choice(c, label) for c, label in FIXED_CHOICES[field_type])
    else:
        choices = ()
    if field_type == "calc" and not raw_choices.strip():
        raise DictionaryError(name, "calc field has no calculation")
    return Field(
        name=name,
        form=(row.get("form_name") or "").strip(),
        field_type=field_type,
        label=row.get("field_label") or "",
        section_header=row.get("section_header") or "",
        choices_or_calc=raw_choices,
        note=row.get("field_note") or "",
        validation=(row.get("text_validation_type_or_show_slider_number") or "").strip(),
        validation_min=(row.get("text_validation_min") or "").strip(),
        validation_max=(row.get("text_validation_max") or "").strip(),
        identifier=(row.get("identifier") or "").strip().lower() == "y",
        branching_logic=row.get("branching_logic") or "",
        required=(row.get("required_field") or "").strip().lower() == "y",
        custom_alignment=row.get("custom_alignment") or "",
        question_number=row.get("question_number") or "",
        matrix_group=row.get("matrix_group_name") or "",
        matrix_ranking=row.get("matrix_ranking") or "",
        annotation=row.get("field_annotation") or "",
        choices=choices,
    )


@dataclass(frozen=True)
class DataDictionary:
    """All fields of a project in dictionary order; the first is the record id field."""

    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        if not self.fields:
            raise DictionaryError("<none>", "the data dictionary has no fields")
        seen: set[str] = set()
        for f in self.fields:
            if f.name in seen:
                raise DictionaryError(f.name, "field name appears twice")
            if not f.form:
                raise DictionaryError(f.name, "field has no form_name")
            seen.add(f.name)

    @classmethod
    def from_metadata(cls, rows: Iterable[Mapping[str, str]]) -> DataDictionary:
        return cls(tuple(field_from_metadata(r) for r in rows))

    @classmethod
    def from_csv_rows(cls, rows: Iterable[Mapping[str, str]]) -> DataDictionary:
        """From REDCap's data-dictionary CSV (its human-readable headers)."""
        header_to_key = dict(zip(CSV_HEADERS, METADATA_KEYS, strict=True))
        return cls.from_metadata(
            {header_to_key.get(k, k): (v or "") for k, v in row.items()} for row in rows
        )

    @classmethod
    def from_csv_file(cls, path: Path) -> DataDictionary:
        """From a data-dictionary CSV file as REDCap downloads it (a BOM is tolerated)."""
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                if CSV_HEADERS[0] not in (reader.fieldnames or ()) and \
                        METADATA_KEYS[0] not in (reader.fieldnames or ()):
                    raise DictionaryError("<header>", f"not a REDCap data dictionary (no "
                                          f"{CSV_HEADERS[0]!r} column)", str(path))
                return cls.from_csv_rows(reader)
        except DictionaryError as exc:
            if exc.source:
                raise
            raise DictionaryError(exc.field, exc.problem, str(path)) from exc
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DictionaryError("<file>", f"cannot be read ({exc})", str(path)) from exc

    def to_metadata(self) -> list[dict[str, str]]:
        return [f.to_metadata() for f in self.fields]

    @property
    def record_id_field(self) -> str:
        return self.fields[0].name

    @property
    def forms(self) -> list[str]:
        """Instrument names in dictionary order."""
        return list(dict.fromkeys(f.form for f in self.fields))

    def form_fields(self, form: str) -> list[Field]:
        return [f for f in self.fields if f.form == form]

    @cached_property
    def _by_name(self) -> dict[str, Field]:
        # Builders look fields up once per row and item: a scan of the tuple was a hot spot.
        return {f.name: f for f in self.fields}

    def field(self, name: str) -> Field:
        return self._by_name[name]

    def has_field(self, name: str) -> bool:
        return name in self._by_name

    def export_columns(self, forms: Iterable[str] | None = None) -> list[str]:
        """Flat-export data columns in dictionary order, each form followed by `<form>_complete`.

        The record id field is always first, whatever forms are asked for.
        """
        wanted = set(self.forms if forms is None else forms)
        columns = [self.record_id_field]
        for form in self.forms:
            if form not in wanted:
                continue
            for f in self.form_fields(form):
                if f.name != self.record_id_field:
                    columns.extend(f.export_columns)
            columns.append(f"{form}_complete")
        return columns
