"""Field-to-FHIR mappings as data: load a study's YAML mapping folder into frozen objects.

A study folder (e.g. `mappings/imt/`) holds `study.yaml` and one YAML file per REDCap instrument;
`mappings/README.md` documents every key. Every problem raises MappingError naming the file and
the dotted key path (e.g. `measures.mip_kh2_best.unit`).
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

import imt_etl.scores as scores
from imt_etl.errors import MappingError
from imt_etl.fhir.terminology import (
    SYSTEM_URLS,
    Terminology,
    load_terminology,
    loinc_problem,
    snomed_problem,
    ucum_problem,
)
from imt_etl.redcap.dictionary import DataDictionary, Field

logger = logging.getLogger(__name__)

STUDY_FILE = "study.yaml"
# Other files of a study folder that are not instrument mappings (analysis settings: tables).
NON_INSTRUMENT_FILES = frozenset({STUDY_FILE, "analysis.yaml"})
TARGETS = ("observation", "component", "questionnaire_only", "excluded")
# The R4 observation-category value set (http://terminology.hl7.org/CodeSystem/observation-category).
CATEGORIES = (
    "social-history", "vital-signs", "imaging", "laboratory", "procedure", "survey", "exam",
    "therapy", "activity",
)
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
VALUE_TYPES = ("quantity", "integer", "codeable", "boolean", "string")
DIRECTIONS = {"higher_is_better": True, "lower_is_better": False}
CODE_SYSTEMS = ("loinc", "snomed", "local")
CODESYSTEM_STATUSES = ("draft", "active", "retired", "unknown")
# Study settings owned by other modules (pseudonymisation, date shifting): kept, not read here.
PASSTHROUGH_STUDY_KEYS = frozenset({"pseudonymisation", "date_shifting"})

_ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# Trial registry ids the ResearchStudy identifier knows a system for (imt_etl.fhir.study).
REGISTRY_ID_RE = re.compile(r"(NCT|ISRCTN)\d{8}")
_LOCAL_CODE_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
# Derived-measure outputs that can be checked without calling the function.
_OUTPUT_KEYS: dict[str, tuple[str, ...]] = {"rand36_scales": tuple(scores.SCALES)}


# --- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Coding:
    """A code in one of the mapping systems; `definition` is required (and kept) for local codes."""

    system: str  # loinc | snomed | local
    code: str
    display: str
    definition: str = ""

    def system_url(self, local_url: str) -> str:
        return local_url if self.system == "local" else SYSTEM_URLS[self.system]


@dataclass(frozen=True)
class Conversion:
    """Convert values recorded in `from_unit` to the measure's unit by `factor` (if configured)."""

    from_unit: str
    factor: float
    to_unit: str
    from_unit_field: str | None = None  # a field saying, per record, which unit was used
    unit_codes: tuple[tuple[str, str], ...] = ()  # that field's REDCap code -> UCUM unit

    def recorded_unit(self, unit_code: str | None = None) -> str:
        """The UCUM unit of a recorded value, given the unit field's REDCap code (if any)."""
        if self.from_unit_field is None:
            return self.from_unit
        units = dict(self.unit_codes)
        if unit_code is None or str(unit_code) not in units:
            known = sorted(units)
            raise ValueError(f"{self.from_unit_field} code {unit_code!r} is not one of {known}")
        return units[str(unit_code)]

    def factor_for(self, unit_code: str | None = None) -> float:
        """Multiply a recorded value by this to express it in `to_unit`."""
        return self.factor if self.recorded_unit(unit_code) == self.from_unit else 1.0


@dataclass(frozen=True)
class DerivedInput:
    """How one parameter of a score function gets its value from a record."""

    parameter: str
    kind: str  # field | fields | numbered | constant
    fields: tuple[str, ...] = ()
    value_map: tuple[tuple[str, str], ...] = ()
    constant: Any = None

    def resolve(self, values: Mapping[str, Any]) -> Any:
        if self.kind == "constant":
            return self.constant
        if self.kind == "fields":
            return [values.get(f) for f in self.fields]
        if self.kind == "numbered":
            return {i: values.get(f) for i, f in enumerate(self.fields, start=1)}
        value = values.get(self.fields[0])
        if not self.value_map or value is None or value == "":
            return value
        recode = dict(self.value_map)
        if str(value) not in recode:
            raise ValueError(f"{self.fields[0]} value {value!r} is not one of {sorted(recode)}")
        return recode[str(value)]


@dataclass(frozen=True)
class Derivation:
    """A measure computed by a function of imt_etl.scores from other fields of the same record."""

    function: str
    inputs: tuple[DerivedInput, ...]
    output: str | None = None  # key of the result when the function returns a mapping

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f for i in self.inputs for f in i.fields)

    def compute(self, values: Mapping[str, Any]) -> Any:
        """Call the score function on one record's typed values (field -> number or code)."""
        func: Callable[..., Any] = getattr(scores, self.function)
        result = func(**{i.parameter: i.resolve(values) for i in self.inputs})
        return result[self.output] if self.output is not None else result


@dataclass(frozen=True)
class Measure:
    """One mapped REDCap field (or derived value) and how it becomes FHIR."""

    measure_id: str
    instrument: str
    file: str
    target: str
    field: str | None
    concept: str = ""
    codes: tuple[Coding, ...] = ()
    value_type: str | None = None
    unit: str | None = None
    unit_display: str | None = None
    convert: Conversion | None = None
    category: str | None = None
    value_map: tuple[tuple[str, Coding], ...] = ()
    effective_field: str | None = None
    parent: str | None = None
    components: tuple[str, ...] = ()
    derived: Derivation | None = None
    direction: str | None = None
    label: str = ""
    reason: str = ""  # why an excluded field is left out

    @property
    def higher_is_better(self) -> bool | None:
        return DIRECTIONS.get(self.direction) if self.direction else None

    @property
    def is_derived(self) -> bool:
        return self.derived is not None

    @property
    def makes_fhir_data(self) -> bool:
        """True for an Observation or a component (not questionnaire-only or excluded fields)."""
        return self.target in ("observation", "component")

    def answer(self, redcap_code: str) -> Coding | None:
        return dict(self.value_map).get(str(redcap_code))


@dataclass(frozen=True)
class CodeSystemInfo:
    url: str
    version: str
    name: str
    title: str
    status: str
    publisher: str = ""
    description: str = ""


@dataclass(frozen=True)
class StudyInfo:
    study_id: str
    title: str
    nct_id: str
    version: str  # the mapping version, recorded in outputs
    canonical_base: str
    timezone: str
    loinc_version: str
    codesystem: CodeSystemInfo
    instruments: tuple[str, ...]
    settings: Mapping[str, Any] = field(default_factory=dict, compare=False)
    registry_id: str = ""  # a trial registry id other than nct_id (e.g. ISRCTN12345678)

    @property
    def trial_ids(self) -> tuple[str, ...]:
        """The study's trial registry ids (NCT, ISRCTN), without repeats."""
        return tuple(dict.fromkeys(i for i in (self.nct_id, self.registry_id) if i))


@dataclass(frozen=True)
class StudyMapping:
    """A study's validated mappings: measures in file order, indexed by field and id."""

    study: StudyInfo
    measures: tuple[Measure, ...]
    folder: Path
    terminology: Terminology = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        by_field = {m.field: m for m in self.measures if m.field is not None}
        object.__setattr__(self, "_by_field", by_field)
        object.__setattr__(self, "_by_id", {m.measure_id: m for m in self.measures})

    @property
    def by_field(self) -> Mapping[str, Measure]:
        return self._by_field  # type: ignore[attr-defined]

    def measure(self, measure_id: str) -> Measure:
        return self._by_id[measure_id]  # type: ignore[attr-defined]

    @property
    def observations(self) -> tuple[Measure, ...]:
        """Measures that become an Observation resource (mapped fields and derived measures)."""
        return tuple(m for m in self.measures if m.target == "observation")

    def components_of(self, measure: Measure) -> tuple[Measure, ...]:
        return tuple(self.measure(c) for c in measure.components)

    def local_concepts(self) -> tuple[Coding, ...]:
        """Every local code used (measure codes and answer codes), first use first, no repeats."""
        seen: dict[str, Coding] = {}
        for m in self.measures:
            for coding in (*m.codes, *(c for _, c in m.value_map)):
                if coding.system == "local":
                    seen.setdefault(coding.code, coding)
        return tuple(seen.values())


# --- YAML reading -------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


@functools.lru_cache(maxsize=128)
def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506


def _load_yaml(text: str) -> Any:
    """The document in `text`, parsed once per distinct text (a run reads every mapping file
    twice, a long-lived process such as Dagster's many times); a copy, free to change.
    A text that does not parse raises every time (errors are not cached)."""
    return copy.deepcopy(_parse_yaml(text))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = _load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(path.name, "<file>", f"cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise MappingError(path.name, "<yaml>", f"not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise MappingError(path.name, "<top>", "the file must hold a mapping of keys")
    return data


@dataclass(frozen=True)
class _Ctx:
    """Where we are while validating: the file and the dotted key path, for error messages."""

    file: str
    path: str = ""

    def at(self, key: str | int) -> _Ctx:
        if isinstance(key, int):
            return _Ctx(self.file, f"{self.path}[{key}]")
        return _Ctx(self.file, f"{self.path}.{key}" if self.path else str(key))

    def error(self, problem: str) -> MappingError:
        return MappingError(self.file, self.path or "<top>", problem)

    def keys(self, data: Any, allowed: Sequence[str], required: Sequence[str] = ()) -> dict:
        if not isinstance(data, dict):
            raise self.error(f"must be a mapping, got {type(data).__name__}")
        for key in data:
            if key not in allowed:
                raise self.at(str(key)).error(f"unknown key (allowed: {', '.join(allowed)})")
        for key in required:
            if data.get(key) in (None, ""):
                raise self.at(key).error("is required")
        return data

    def text(self, data: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
        value = data.get(key, default)
        if value is None:
            return None
        # YAML reads 27913002 or 1.0 as numbers; codes and versions are strings, bools are not.
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.at(key).error(f"must be a string, got {type(value).__name__}")
        return str(value)

    def choice(self, data: Mapping[str, Any], key: str, options: Sequence[str]) -> str | None:
        value = self.text(data, key)
        if value is not None and value not in options:
            raise self.at(key).error(f"{value!r} is not one of {', '.join(options)}")
        return value


# --- study.yaml ---------------------------------------------------------------------------------

_STUDY_KEYS = (
    "version", "study_id", "title", "nct_id", "registry_id", "canonical_base", "timezone",
    "loinc_version",
    "codesystem", "instruments", "terminology", *sorted(PASSTHROUGH_STUDY_KEYS),
)
_STUDY_REQUIRED = (
    "version", "study_id", "title", "canonical_base", "timezone", "loinc_version", "codesystem",
    "instruments",
)
_CS_KEYS = ("url", "version", "name", "title", "status", "publisher", "description")


def _study_info(data: dict[str, Any]) -> StudyInfo:
    ctx = _Ctx(STUDY_FILE)
    ctx.keys(data, _STUDY_KEYS, _STUDY_REQUIRED)
    study_id = ctx.text(data, "study_id") or ""
    if not _ID_RE.match(study_id):
        raise ctx.at("study_id").error("must be snake_case (a-z, 0-9, _)")
    nct = ctx.text(data, "nct_id", "") or ""
    if nct and not re.fullmatch(r"NCT\d{8}", nct):
        raise ctx.at("nct_id").error(f"{nct!r} is not an NCT identifier (NCT + 8 digits)")
    registry = ctx.text(data, "registry_id", "") or ""
    if registry and not REGISTRY_ID_RE.fullmatch(registry):
        raise ctx.at("registry_id").error(
            f"{registry!r} is not a known trial registry id (NCT or ISRCTN + 8 digits)")
    base = (ctx.text(data, "canonical_base") or "").rstrip("/")
    _check_url(ctx.at("canonical_base"), base)
    _check_timezone(ctx.at("timezone"), ctx.text(data, "timezone") or "")
    instruments = data["instruments"]
    if not isinstance(instruments, list) or not all(isinstance(i, str) for i in instruments):
        raise ctx.at("instruments").error("must be a list of instrument file names")
    return StudyInfo(
        study_id=study_id, title=ctx.text(data, "title") or "", nct_id=nct,
        version=ctx.text(data, "version") or "", canonical_base=base,
        timezone=ctx.text(data, "timezone") or "",
        loinc_version=ctx.text(data, "loinc_version") or "",
        codesystem=_codesystem_info(ctx.at("codesystem"), data["codesystem"], base, study_id),
        instruments=tuple(instruments),
        settings={k: data[k] for k in PASSTHROUGH_STUDY_KEYS if k in data},
        registry_id=registry,
    )


def _codesystem_info(ctx: _Ctx, data: Any, base: str, study_id: str) -> CodeSystemInfo:
    ctx.keys(data, _CS_KEYS, ("version",))
    url = ctx.text(data, "url") or f"{base}/CodeSystem/{study_id}"
    _check_url(ctx.at("url"), url)
    name = ctx.text(data, "name") or f"ImtEtl{study_id.title().replace('_', '')}LocalCodes"
    # FHIR's cnl-0 invariant: a computable name starts with a capital letter, no spaces.
    if not re.fullmatch(r"[A-Z][A-Za-z0-9_]{0,254}", name):
        raise ctx.at("name").error(f"{name!r} is not a computable name ([A-Z][A-Za-z0-9_]*)")
    return CodeSystemInfo(
        url=url, version=ctx.text(data, "version") or "", name=name,
        title=ctx.text(data, "title") or f"Local codes of study {study_id}",
        status=ctx.choice(data, "status", CODESYSTEM_STATUSES) or "active",
        publisher=ctx.text(data, "publisher", "") or "",
        description=ctx.text(data, "description", "") or "",
    )


def _check_url(ctx: _Ctx, url: str) -> None:
    if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", url):
        raise ctx.error(f"{url!r} is not an absolute http(s) URL")


def _check_timezone(ctx: _Ctx, name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ctx.error(f"{name!r} is not an IANA time zone") from exc


# --- instrument files ---------------------------------------------------------------------------

_INSTRUMENT_KEYS = (
    "instrument", "description", "effective_field", "category", "measures", "derived",
    "questionnaire_only", "excluded",
)
_MEASURE_KEYS = (
    "field", "target", "concept", "label", "code", "value_type", "unit", "unit_display",
    "convert", "category", "value_map", "effective_field", "components", "direction",
)
_COMPONENT_KEYS = (
    "field", "target", "concept", "label", "code", "value_type", "unit", "unit_display",
    "convert", "value_map", "direction",
)
_DERIVED_KEYS = (
    "function", "inputs", "output", "concept", "label", "code", "value_type", "unit",
    "unit_display", "category", "effective_field", "direction",
)
_CODING_KEYS = ("system", "code", "display", "definition")
_CONVERT_KEYS = ("from_unit", "factor", "to_unit", "from_unit_field", "unit_codes")


@dataclass(frozen=True)
class _Defaults:
    instrument: str
    file: str
    effective_field: str | None
    category: str | None


class _InstrumentReader:
    """Turns one instrument file into Measures, checking codes and units against the terminology."""

    def __init__(self, path: Path, terminology: Terminology):
        self.path = path
        self.terminology = terminology

    def read(self) -> list[Measure]:
        data = _read_yaml(self.path)
        ctx = _Ctx(self.path.name)
        ctx.keys(data, _INSTRUMENT_KEYS, ("instrument",))
        instrument = ctx.text(data, "instrument") or ""
        defaults = _Defaults(
            instrument=instrument, file=self.path.name,
            effective_field=ctx.text(data, "effective_field"),
            category=ctx.choice(data, "category", CATEGORIES),
        )
        out: list[Measure] = []
        for measure_id, spec in self._entries(ctx.at("measures"), data.get("measures")):
            out.extend(self._measure(ctx.at("measures").at(measure_id), measure_id, spec, defaults))
        for measure_id, spec in self._entries(ctx.at("derived"), data.get("derived")):
            out.append(self._derived(ctx.at("derived").at(measure_id), measure_id, spec, defaults))
        out.extend(self._plain(ctx, data, defaults))
        return out

    @staticmethod
    def _entries(ctx: _Ctx, data: Any) -> Iterator[tuple[str, Any]]:
        if data is None:
            return
        if not isinstance(data, dict):
            raise ctx.error("must be a mapping of measure_id -> settings")
        for key, spec in data.items():
            if not isinstance(key, str) or not _ID_RE.match(key):
                raise ctx.at(str(key)).error("measure_id must be snake_case (a-z, 0-9, _)")
            yield key, spec

    def _plain(self, ctx: _Ctx, data: dict[str, Any], d: _Defaults) -> Iterator[Measure]:
        """questionnaire_only: [field, ...] and excluded: {field: reason}."""
        fields = data.get("questionnaire_only") or []
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise ctx.at("questionnaire_only").error("must be a list of field names")
        for name in fields:
            yield Measure(name, d.instrument, d.file, "questionnaire_only", name)
        excluded = data.get("excluded") or {}
        if not isinstance(excluded, dict):
            raise ctx.at("excluded").error("must be a mapping of field -> reason")
        for name, reason in excluded.items():
            if not isinstance(reason, str) or not reason.strip():
                raise ctx.at("excluded").at(str(name)).error("needs a reason")
            yield Measure(str(name), d.instrument, d.file, "excluded", str(name), reason=reason)

    def _measure(self, ctx: _Ctx, measure_id: str, spec: Any, d: _Defaults) -> list[Measure]:
        ctx.keys(spec, _MEASURE_KEYS, ("field", "target"))
        target = ctx.choice(spec, "target", TARGETS)
        if target == "component":
            raise ctx.at("target").error("components are listed under their parent's components")
        if target in ("questionnaire_only", "excluded"):
            extra = sorted(set(spec) - {"field", "target", "label"})
            if extra:
                raise ctx.at(extra[0]).error(f"not allowed for target {target}")
            return [Measure(measure_id, d.instrument, d.file, target, ctx.text(spec, "field"),
                            label=ctx.text(spec, "label", "") or "")]
        parent = self._observation(ctx, measure_id, spec, d)
        components = [
            self._component(ctx.at("components").at(cid), cid, cspec, parent)
            for cid, cspec in self._entries(ctx.at("components"), spec.get("components"))
        ]
        parent = _replace(parent, components=tuple(c.measure_id for c in components))
        return [parent, *components]

    def _observation(self, ctx: _Ctx, measure_id: str, spec: dict, d: _Defaults) -> Measure:
        common = self._common(ctx, measure_id, spec)
        category = ctx.choice(spec, "category", CATEGORIES) or d.category
        if category is None:
            raise ctx.at("category").error("is required (here or at the top of the file)")
        effective = ctx.text(spec, "effective_field") or d.effective_field
        if effective is None:
            raise ctx.at("effective_field").error("is required (here or at the top of the file)")
        return Measure(
            measure_id=measure_id, instrument=d.instrument, file=d.file, target="observation",
            field=ctx.text(spec, "field"), category=category, effective_field=effective, **common,
        )

    def _component(self, ctx: _Ctx, measure_id: str, spec: Any, parent: Measure) -> Measure:
        ctx.keys(spec, _COMPONENT_KEYS, ("field",))
        if ctx.choice(spec, "target", TARGETS) not in (None, "component"):
            raise ctx.at("target").error("must be component (or left out) inside components")
        return Measure(
            measure_id=measure_id, instrument=parent.instrument, file=parent.file,
            target="component", field=ctx.text(spec, "field"), parent=parent.measure_id,
            effective_field=parent.effective_field, **self._common(ctx, measure_id, spec),
        )

    def _derived(self, ctx: _Ctx, measure_id: str, spec: Any, d: _Defaults) -> Measure:
        ctx.keys(spec, _DERIVED_KEYS, ("function", "inputs"))
        derivation = _derivation(ctx, spec)
        base = self._observation(ctx, measure_id, {**spec, "field": None}, d)
        return _replace(base, field=None, derived=derivation)

    def _common(self, ctx: _Ctx, measure_id: str, spec: dict) -> dict[str, Any]:
        """Keys shared by observations, components and derived measures, checked together."""
        concept = ctx.text(spec, "concept") or measure_id
        value_type = ctx.choice(spec, "value_type", VALUE_TYPES)
        if value_type is None:
            raise ctx.at("value_type").error("is required")
        codes = self._codes(ctx.at("code"), spec.get("code"), concept)
        unit = self._unit(ctx, spec, value_type, concept, codes)
        return dict(
            concept=concept, codes=codes, value_type=value_type, unit=unit,
            unit_display=ctx.text(spec, "unit_display"),
            convert=self._convert(ctx.at("convert"), spec.get("convert"), unit, concept, codes),
            value_map=self._value_map(ctx.at("value_map"), spec.get("value_map"), value_type),
            direction=ctx.choice(spec, "direction", tuple(DIRECTIONS)),
            label=ctx.text(spec, "label", "") or (codes[0].display if codes else ""),
        )

    def _codes(self, ctx: _Ctx, data: Any, concept: str) -> tuple[Coding, ...]:
        if not isinstance(data, list) or not data:
            raise ctx.error("must be a non-empty list of {system, code, display}")
        codes = tuple(self._coding(ctx.at(i), item, concept) for i, item in enumerate(data))
        if len({(c.system, c.code) for c in codes}) != len(codes):
            raise ctx.error("lists the same code twice")
        return codes

    def _coding(self, ctx: _Ctx, data: Any, concept: str | None) -> Coding:
        ctx.keys(data, _CODING_KEYS, ("system", "code", "display"))
        system = ctx.choice(data, "system", CODE_SYSTEMS) or ""
        code = ctx.text(data, "code") or ""
        definition = ctx.text(data, "definition", "") or ""
        if system == "local":
            if not _LOCAL_CODE_RE.match(code):
                raise ctx.at("code").error(f"local code {code!r} must be kebab-case (a-z, 0-9, -)")
            if not definition.strip():
                raise ctx.at("definition").error("is required for a local code (CodeSystem)")
        elif concept is None:
            # Answer codes: no concept to check against, but never a malformed or unknown code.
            problem = loinc_problem(code) if system == "loinc" else snomed_problem(code)
            if problem is None and not self.terminology.rows_for_code(system, code):
                problem = f"{system} {code} is not in the verified table"
            if problem:
                raise ctx.at("code").error(problem)
        if concept is not None:
            if problem := self.terminology.code_problem(concept, system, code):
                raise ctx.at("code").error(problem)
        return Coding(system, code, ctx.text(data, "display") or "", definition)

    def _unit(
        self, ctx: _Ctx, spec: dict, value_type: str, concept: str, codes: tuple[Coding, ...]
    ) -> str | None:
        unit = ctx.text(spec, "unit")
        if value_type != "quantity":
            if unit is not None:
                raise ctx.at("unit").error(f"only a quantity has a unit (value_type {value_type})")
            return None
        if unit is None:
            raise ctx.at("unit").error("is required for value_type quantity (a UCUM code)")
        self._check_unit(ctx.at("unit"), unit, concept, codes)
        return unit

    def _check_unit(self, ctx: _Ctx, unit: str, concept: str, codes: tuple[Coding, ...]) -> None:
        if problem := ucum_problem(unit):
            raise ctx.error(problem)
        standard = [(c.system, c.code) for c in codes if c.system != "local"]
        if problem := self.terminology.unit_problem(concept, standard, unit):
            raise ctx.error(problem)

    def _convert(
        self, ctx: _Ctx, data: Any, unit: str | None, concept: str, codes: tuple[Coding, ...]
    ) -> Conversion | None:
        if data is None:
            return None
        if unit is None:
            raise ctx.error("only a quantity can be converted")
        ctx.keys(data, _CONVERT_KEYS, ("from_unit", "factor", "to_unit"))
        to_unit, from_unit = ctx.text(data, "to_unit") or "", ctx.text(data, "from_unit") or ""
        if to_unit != unit:
            raise ctx.at("to_unit").error(f"{to_unit!r} must equal the measure's unit {unit!r}")
        self._check_unit(ctx.at("from_unit"), from_unit, concept, codes)
        factor = data["factor"]
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor <= 0:
            raise ctx.at("factor").error("must be a positive number")
        unit_field = ctx.text(data, "from_unit_field")
        unit_codes = _string_map(ctx.at("unit_codes"), data.get("unit_codes") or {})
        if (unit_field is None) != (not unit_codes):
            raise ctx.error("from_unit_field and unit_codes go together")
        for code, code_unit in unit_codes:
            if code_unit not in (from_unit, to_unit):
                raise ctx.at("unit_codes").at(code).error(f"must be {from_unit!r} or {to_unit!r}")
        return Conversion(from_unit, float(factor), to_unit, unit_field, unit_codes)

    def _value_map(self, ctx: _Ctx, data: Any, value_type: str) -> tuple[tuple[str, Coding], ...]:
        if value_type != "codeable":
            if data is not None:
                raise ctx.error("only a codeable value has a value_map")
            return ()
        if not isinstance(data, dict) or not data:
            raise ctx.error("is required for value_type codeable: REDCap code -> coding")
        return tuple(
            (_redcap_code(ctx.at(str(k)), k), self._coding(ctx.at(str(k)), v, None))
            for k, v in data.items()
        )


def _replace(measure: Measure, **changes: Any) -> Measure:
    return replace(measure, **changes)


def _redcap_code(ctx: _Ctx, key: Any) -> str:
    # YAML turns `yes`/`no` keys into booleans; REDCap codes are strings or integers.
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise ctx.error("a REDCap choice code must be a string or an integer (quote it)")
    return str(key)


def _string_map(ctx: _Ctx, data: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(data, dict):
        raise ctx.error("must be a mapping")
    return tuple((_redcap_code(ctx.at(str(k)), k), ctx.text(data, k) or "") for k in data)


# --- derived measures ---------------------------------------------------------------------------


def _derivation(ctx: _Ctx, spec: dict[str, Any]) -> Derivation:
    name = ctx.text(spec, "function") or ""
    if name not in scores.__all__ or not callable(getattr(scores, name, None)):
        raise ctx.at("function").error(f"{name!r} is not a function exported by imt_etl.scores")
    params = inspect.signature(getattr(scores, name)).parameters
    raw = spec["inputs"]
    if not isinstance(raw, dict):
        raise ctx.at("inputs").error("must be a mapping of parameter -> field(s)")
    inputs = tuple(_derived_input(ctx.at("inputs").at(str(p)), str(p), v) for p, v in raw.items())
    for item in inputs:
        if item.parameter not in params:
            raise ctx.at("inputs").at(item.parameter).error(
                f"{name} has no parameter {item.parameter!r} (it has {', '.join(params)})"
            )
    given = {i.parameter for i in inputs}
    for pname, param in params.items():
        if param.default is inspect.Parameter.empty and pname not in given:
            raise ctx.at("inputs").error(f"{name} needs parameter {pname!r}")
    return Derivation(name, inputs, _derived_output(ctx, spec, name))


def _derived_output(ctx: _Ctx, spec: dict[str, Any], name: str) -> str | None:
    output = ctx.text(spec, "output")
    annotation = str(inspect.signature(getattr(scores, name)).return_annotation)
    returns_mapping = annotation.startswith(("dict", "Mapping"))
    if returns_mapping and output is None:
        raise ctx.at("output").error(f"{name} returns a mapping: name the key to use")
    if not returns_mapping and output is not None:
        raise ctx.at("output").error(f"{name} returns a single value: output is not allowed")
    known = _OUTPUT_KEYS.get(name)
    if output is not None and known is not None and output not in known:
        raise ctx.at("output").error(f"{output!r} is not one of {', '.join(known)}")
    return output


def _derived_input(ctx: _Ctx, parameter: str, value: Any) -> DerivedInput:
    if isinstance(value, str):
        return DerivedInput(parameter, "field", (value,))
    if isinstance(value, list):
        return DerivedInput(parameter, "fields", _field_list(ctx, value))
    if not isinstance(value, dict):
        raise ctx.error("must be a field, a list of fields or a mapping")
    if "numbered" in value:
        ctx.keys(value, ("numbered",))
        numbered = _field_list(ctx.at("numbered"), value["numbered"])
        return DerivedInput(parameter, "numbered", numbered)
    if "value" in value:
        ctx.keys(value, ("value",))
        return DerivedInput(parameter, "constant", constant=value["value"])
    ctx.keys(value, ("field", "map"), ("field",))
    recode = _string_map(ctx.at("map"), value.get("map") or {})
    return DerivedInput(parameter, "field", (ctx.text(value, "field") or "",), recode)


def _field_list(ctx: _Ctx, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(f, str) for f in value):
        raise ctx.error("must be a non-empty list of field names")
    return tuple(value)


# --- whole-study checks -------------------------------------------------------------------------


def _check_unique(measures: Sequence[Measure]) -> None:
    ids: dict[str, Measure] = {}
    fields: dict[str, Measure] = {}
    local: dict[str, tuple[Measure, Coding]] = {}
    for m in measures:
        where = _Ctx(m.file, _measure_path(m))
        if m.measure_id in ids:
            raise where.error(f"measure_id already used in {ids[m.measure_id].file}")
        ids[m.measure_id] = m
        if m.field is not None:
            if m.field in fields:
                other = fields[m.field]
                raise where.error(f"field {m.field!r} is already mapped by {other.file} "
                                  f"({other.measure_id})")
            fields[m.field] = m
        _check_local_codes(where, m, local)


def _check_local_codes(
    where: _Ctx, m: Measure, local: dict[str, tuple[Measure, Coding]]
) -> None:
    """A local code names one concept: one display and definition, one measure."""
    for coding in (*m.codes, *(c for _, c in m.value_map)):
        if coding.system != "local":
            continue
        previous = local.get(coding.code)
        if previous is None:
            local[coding.code] = (m, coding)
            continue
        other, first = previous
        if (first.display, first.definition) != (coding.display, coding.definition):
            raise where.error(f"local code {coding.code!r} is defined differently in "
                              f"{other.file} ({other.measure_id})")
        if coding in m.codes and first in other.codes:
            raise where.error(f"local code {coding.code!r} already codes {other.measure_id}")


def _measure_path(m: Measure) -> str:
    if m.target == "component":
        return f"measures.{m.parent}.components.{m.measure_id}"
    if m.is_derived:
        return f"derived.{m.measure_id}"
    if m.target == "questionnaire_only":
        return f"questionnaire_only.{m.field}"
    if m.target == "excluded":
        return f"excluded.{m.field}"
    return f"measures.{m.measure_id}"


def load_study_mapping(folder: Path, dictionary: DataDictionary | None = None) -> StudyMapping:
    """Load and validate a study's mapping folder (and check it against `dictionary` if given)."""
    folder = Path(folder)
    data = _read_yaml(folder / STUDY_FILE)
    study = _study_info(data)
    term_dir = folder / str(data.get("terminology") or "../terminology")
    terminology = load_terminology(term_dir.resolve())
    _check_instrument_files(folder, study)
    measures: list[Measure] = []
    for name in study.instruments:
        measures.extend(_InstrumentReader(folder / name, terminology).read())
    _check_unique(measures)
    mapping = StudyMapping(study, tuple(measures), folder, terminology)
    if dictionary is not None:
        validate_against_dictionary(mapping, dictionary)
    logger.info("mapping %s v%s: %d measures from %d files", study.study_id, study.version,
                len(measures), len(study.instruments))
    return mapping


def _check_instrument_files(folder: Path, study: StudyInfo) -> None:
    listed = set(study.instruments)
    for i, name in enumerate(study.instruments):
        if not (folder / name).is_file():
            where = _Ctx(STUDY_FILE, f"instruments[{i}]")
            raise where.error(f"file {name!r} not found in {folder}")
    for path in sorted(folder.glob("*.yaml")):
        if path.name not in NON_INSTRUMENT_FILES and path.name not in listed:
            where = _Ctx(STUDY_FILE, "instruments")
            raise where.error(f"{path.name} is in the folder but not listed")


# --- against a data dictionary ------------------------------------------------------------------

_NUMERIC_VALIDATIONS = re.compile(r"^(integer|number|number_\d+dp(_comma_decimal)?|float)$")
_DATE_VALIDATIONS = re.compile(r"^(date|datetime|datetime_seconds)_(ymd|mdy|dmy)$")


def unmapped_fields(mapping: StudyMapping, dictionary: DataDictionary) -> list[str]:
    """Data-bearing fields of the dictionary that no mapping entry mentions, in dictionary order."""
    return [f.name for f in dictionary.fields if f.has_data and f.name not in mapping.by_field]


def validate_against_dictionary(mapping: StudyMapping, dictionary: DataDictionary) -> None:
    """Raise MappingError for a field, form, choice or date that the dictionary contradicts."""
    forms = set(dictionary.forms)
    for m in mapping.measures:
        where = _Ctx(m.file, _measure_path(m))
        if m.instrument not in forms:
            raise _Ctx(m.file, "instrument").error(f"{m.instrument!r} is not an instrument "
                                                   "of the data dictionary")
        if m.field is not None:
            _check_field(where, m, dictionary)
        if m.effective_field is not None and m.target == "observation":
            _check_date_field(where.at("effective_field"), m.effective_field, dictionary)
        if m.convert is not None and m.convert.from_unit_field is not None:
            _check_unit_field(where.at("convert"), m.convert, dictionary)
        if m.derived is not None:
            _check_inputs(where.at("inputs"), m.derived, dictionary)


def _lookup(ctx: _Ctx, name: str, dictionary: DataDictionary) -> Field:
    if not dictionary.has_field(name):
        raise ctx.error(f"field {name!r} is not in the data dictionary")
    return dictionary.field(name)


def _check_field(where: _Ctx, m: Measure, dictionary: DataDictionary) -> None:
    f = _lookup(where.at("field"), m.field or "", dictionary)
    if f.form != m.instrument:
        raise where.at("field").error(f"field {f.name!r} belongs to instrument {f.form!r}, "
                                      f"not {m.instrument!r}")
    if not f.has_data:
        raise where.at("field").error(f"field {f.name!r} is {f.field_type}: it holds no data")
    if f.identifier and m.target != "excluded":
        raise where.error(f"field {f.name!r} is an identifier: list it under excluded")
    if m.value_type is not None:
        _check_value_type(where.at("value_type"), m, f)
    if m.value_map:
        _check_choices(where.at("value_map"), f, [code for code, _ in m.value_map])


def _check_value_type(ctx: _Ctx, m: Measure, f: Field) -> None:
    numeric = (
        f.field_type in ("calc", "slider")
        or (f.field_type == "text" and bool(_NUMERIC_VALIDATIONS.match(f.validation)))
        or (f.choices and all(c.code.lstrip("-").isdigit() for c in f.choices))
    )
    ok = {
        "quantity": numeric and f.field_type not in ("yesno", "truefalse", "checkbox"),
        "integer": numeric and f.field_type not in ("yesno", "truefalse", "checkbox"),
        "codeable": bool(f.choices) and not f.is_checkbox,
        "boolean": f.field_type in ("yesno", "truefalse"),
        "string": f.field_type in ("text", "notes"),
    }[m.value_type or ""]
    if not ok:
        raise ctx.error(f"{m.value_type} does not fit field {f.name!r} "
                        f"({f.field_type}{', ' + f.validation if f.validation else ''})")


def _check_choices(ctx: _Ctx, f: Field, codes: Sequence[str]) -> None:
    choices = [c.code for c in f.choices]
    unknown = [c for c in codes if c not in choices]
    if unknown:
        raise ctx.at(unknown[0]).error(f"{unknown[0]!r} is not a choice of field {f.name!r} "
                                       f"({', '.join(choices)})")
    missing = [c for c in choices if c not in codes]
    if missing:
        raise ctx.error(f"choices {missing} of field {f.name!r} are not mapped")


def _check_date_field(ctx: _Ctx, name: str, dictionary: DataDictionary) -> None:
    f = _lookup(ctx, name, dictionary)
    if not _DATE_VALIDATIONS.match(f.validation):
        raise ctx.error(f"field {name!r} is not a date or datetime field")


def _check_unit_field(ctx: _Ctx, convert: Conversion, dictionary: DataDictionary) -> None:
    f = _lookup(ctx.at("from_unit_field"), convert.from_unit_field or "", dictionary)
    _check_choices(ctx.at("unit_codes"), f, [code for code, _ in convert.unit_codes])


def _check_inputs(ctx: _Ctx, derivation: Derivation, dictionary: DataDictionary) -> None:
    for item in derivation.inputs:
        for name in item.fields:
            f = _lookup(ctx.at(item.parameter), name, dictionary)
            if item.value_map and f.choices:
                unknown = [c for c, _ in item.value_map if f.choice_label(c) is None]
                if unknown:
                    raise ctx.at(item.parameter).at("map").error(
                        f"{unknown[0]!r} is not a choice of field {name!r}"
                    )
