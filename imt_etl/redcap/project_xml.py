"""Read and write REDCap project XML (CDISC ODM 1.3.1 with REDCap's `redcap:` extensions)."""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from imt_etl.errors import DictionaryError, ProjectXmlError
from imt_etl.redcap.dictionary import DataDictionary, Field, field_from_metadata
from imt_etl.redcap.model import (
    Arm,
    DataAccessGroup,
    Event,
    ProjectDefinition,
    RecordRow,
    RepeatingSetup,
)

log = logging.getLogger(__name__)

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
REDCAP_NS = "https://projectredcap.org"
_O = f"{{{ODM_NS}}}"
_R = f"{{{REDCAP_NS}}}"

# REDCap's back-end field type names (used in the XML) <-> the data dictionary's names.
XML_TO_DICT_TYPE = {"textarea": "notes", "select": "dropdown"}
DICT_TO_XML_TYPE = {v: k for k, v in XML_TO_DICT_TYPE.items()}

# GlobalVariables elements kept in ProjectDefinition.settings (element -> settings key).
SETTING_TAGS: dict[str, str] = {
    "RecordAutonumberingEnabled": "record_autonumbering_enabled",
    "CustomRecordLabel": "custom_record_label",
    "SecondaryUniqueField": "secondary_unique_field",
    "SchedulingEnabled": "scheduling_enabled",
    "SurveysEnabled": "surveys_enabled",
    "SurveyInvitationEmailField": "survey_invitation_email_field",
    "Purpose": "purpose",
    "PurposeOther": "purpose_other",
    "ProjectNotes": "project_notes",
}
# settings key prefix for instrument labels: settings["form_label:demographics"] = "Demographics".
FORM_LABEL_PREFIX = "form_label:"
# Data values that are not dictionary fields: REDCap's pseudo fields.
_PSEUDO_FIELDS = frozenset({"redcap_data_access_group", "redcap_survey_identifier"})


@dataclass
class _Parsed:
    """What the metadata pass learns and the data pass needs."""

    source: str
    fields: list[Field] = field(default_factory=list)
    checkbox_columns: dict[str, str] = field(default_factory=dict)  # export column -> field
    form_of: dict[str, str] = field(default_factory=dict)  # field -> form
    datetime_fields: set[str] = field(default_factory=set)
    file_fields: set[str] = field(default_factory=set)


def default_form_label(form: str) -> str:
    """Instrument label used when settings hold none: `training_diary` -> `Training Diary`."""
    return " ".join(word[:1].upper() + word[1:] for word in form.split("_") if word)


def _text(elem: ET.Element | None) -> str:
    return "" if elem is None else (elem.text or "")


def _source_name(source: str | Path | bytes) -> tuple[str, bytes]:
    """Name for messages and the raw bytes of the document."""
    if isinstance(source, bytes):
        return "<bytes>", source
    if isinstance(source, str) and source.lstrip().startswith("<"):
        return "<string>", source.encode("utf-8")
    path = Path(source)
    try:
        return str(path), path.read_bytes()
    except OSError as exc:
        raise ProjectXmlError(str(path), f"cannot be read: {exc.strerror or exc}") from exc


def _parse_root(name: str, raw: bytes) -> ET.Element:
    # Entity declarations are refused outright: expat expands internal entities (billion-laughs
    # style blow-ups) and REDCap never writes a DTD, so a DOCTYPE means the file is not ours.
    if b"<!DOCTYPE" in raw[:4096] or b"<!ENTITY" in raw:
        raise ProjectXmlError(name, "DOCTYPE/ENTITY declarations are not allowed")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise ProjectXmlError(name, f"not well-formed XML ({exc})") from exc
    if root.tag != f"{_O}ODM":
        raise ProjectXmlError(name, f"root element is {root.tag!r}, expected ODM 1.3 <ODM>")
    return root


def _required(parent: ET.Element, tag: str, source: str, where: str) -> ET.Element:
    found = parent.find(tag)
    if found is None:
        local = tag.rsplit("}", 1)[-1]
        raise ProjectXmlError(source, f"<{local}> is missing from <{where}>")
    return found


def read_project_xml(source: str | Path | bytes) -> ProjectDefinition:
    """Parse a REDCap project XML file (path, XML text or bytes) into a ProjectDefinition."""
    name, raw = _source_name(source)
    root = _parse_root(name, raw)
    study = _required(root, f"{_O}Study", name, "ODM")
    gv = _required(study, f"{_O}GlobalVariables", name, "Study")
    mdv = _required(study, f"{_O}MetaDataVersion", name, "Study")
    title = _text(gv.find(f"{_O}StudyName")).strip() or mdv.get("Name", "")
    if not title:
        raise ProjectXmlError(name, "<StudyName> is missing or empty in <GlobalVariables>")

    parsed = _Parsed(name)
    dictionary = _read_dictionary(mdv, parsed)
    events, arms, mapping = _read_events(mdv, name)
    longitudinal = bool(events)
    repeating = _read_repeating(gv, longitudinal)
    dags = _read_dags(gv)
    settings = {
        key: _text(gv.find(f"{_R}{tag}")).strip()
        for tag, key in SETTING_TAGS.items()
        if _text(gv.find(f"{_R}{tag}")).strip()
    }
    created = root.get("CreationDateTime", "")
    # The writer's stand-in stamp means "none given": leave it out so round trips are exact.
    if created and created != DEFAULT_CREATION_DATETIME:
        settings["creation_datetime"] = created
    # Instrument labels live in settings (the model has no slot for them); default ones are
    # left out so that a project without labels survives a write/read round trip unchanged.
    for form_def in mdv.findall(f"{_O}FormDef"):
        form = form_def.get(f"{_R}FormName") or form_def.get("OID", "").removeprefix("Form.")
        label = form_def.get("Name", "")
        if label and label != default_form_label(form):
            settings[f"{FORM_LABEL_PREFIX}{form}"] = label
    project = ProjectDefinition(
        title=title,
        dictionary=dictionary,
        arms=arms,
        events=events,
        form_event_mapping=mapping,
        repeating=repeating,
        missing_data_codes=_text(gv.find(f"{_R}MissingDataCodes")).strip(),
        data_access_groups=dags,
        settings=settings,
        source_system_version=root.get("SourceSystemVersion", "") or "",
    )
    clinical = root.find(f"{_O}ClinicalData")
    if clinical is not None:
        _read_clinical(clinical, parsed, project)
    log.debug("read project XML %s: %d fields, %d events, %d rows", name,
              len(dictionary.fields), len(events), len(project.rows))
    return project


# ---------------------------------------------------------------- metadata


def _label(container: ET.Element | None) -> str:
    """REDCap keeps HTML labels in FormattedTranslatedText and a stripped copy in TranslatedText."""
    if container is None:
        return ""
    formatted = container.find(f"{_R}FormattedTranslatedText")
    if formatted is not None and formatted.text:
        return formatted.text
    return _text(container.find(f"{_O}TranslatedText"))


def _code_list_text(code_list: ET.Element) -> str:
    items = []
    for item in code_list.findall(f"{_O}CodeListItem"):
        items.append(f"{item.get('CodedValue', '')}, {_label(item.find(f'{_O}Decode'))}")
    return " | ".join(items)


def _read_dictionary(mdv: ET.Element, parsed: _Parsed) -> DataDictionary:
    source = parsed.source
    item_defs = {e.get("OID", ""): e for e in mdv.findall(f"{_O}ItemDef")}
    group_defs = {e.get("OID", ""): e for e in mdv.findall(f"{_O}ItemGroupDef")}
    code_lists = {e.get("OID", ""): e for e in mdv.findall(f"{_O}CodeList")}
    form_defs = mdv.findall(f"{_O}FormDef")
    if not form_defs:
        raise ProjectXmlError(source, "<MetaDataVersion> has no <FormDef>")
    seen: set[str] = set()
    for form_def in form_defs:
        form = form_def.get(f"{_R}FormName") or form_def.get("OID", "").removeprefix("Form.")
        for group_ref in form_def.findall(f"{_O}ItemGroupRef"):
            group_oid = group_ref.get("ItemGroupOID", "")
            group = group_defs.get(group_oid)
            if group is None:
                raise ProjectXmlError(source, f"<ItemGroupDef OID={group_oid!r}> referenced by "
                                      f"form {form!r} is missing")
            for ref in group.findall(f"{_O}ItemRef"):
                oid = ref.get("ItemOID", "")
                item = item_defs.get(oid)
                if item is None:
                    raise ProjectXmlError(source, f"<ItemDef OID={oid!r}> referenced by "
                                          f"<ItemGroupDef OID={group_oid!r}> is missing")
                _add_item(item, ref, form, seen, code_lists, parsed)
    try:
        return DataDictionary(tuple(parsed.fields))
    except DictionaryError as exc:
        raise ProjectXmlError(source, str(exc)) from exc


def _add_item(item: ET.Element, ref: ET.Element, form: str, seen: set[str],
              code_lists: dict[str, ET.Element], parsed: _Parsed) -> None:
    oid = item.get("OID", "")
    variable = item.get(f"{_R}Variable") or ref.get(f"{_R}Variable") or oid
    xml_type = item.get(f"{_R}FieldType")
    # No FieldType: a pseudo field (DAG, survey identifier or timestamp); `<form>_complete`
    # is a form status, not a dictionary field.
    if xml_type is None or variable == f"{form}_complete":
        return
    if xml_type == "checkbox":
        parsed.checkbox_columns[oid] = variable
    if variable in seen:
        # A checkbox has one ItemDef per option, all with the same variable, on one form.
        if xml_type != "checkbox" or parsed.form_of.get(variable) != form:
            raise ProjectXmlError(parsed.source, f"field {variable!r} is defined twice (forms "
                                  f"{parsed.form_of.get(variable)!r} and {form!r})")
        return
    seen.add(variable)
    field_type = XML_TO_DICT_TYPE.get(xml_type, xml_type)
    code_ref = item.find(f"{_O}CodeListRef")
    code_list = code_lists.get(code_ref.get("CodeListOID", "")) if code_ref is not None else None
    if code_ref is not None and code_list is None:
        raise ProjectXmlError(parsed.source, f"field {variable!r}: <CodeList OID="
                              f"{code_ref.get('CodeListOID')!r}> is missing")
    choices = _choices_for(item, field_type, code_list, parsed.source, variable)
    minimum = maximum = ""
    for check in item.findall(f"{_O}RangeCheck"):
        value = _text(check.find(f"{_O}CheckValue")).strip()
        if check.get("Comparator") in ("GE", "GT"):
            minimum = value
        elif check.get("Comparator") in ("LE", "LT"):
            maximum = value
    required = item.get(f"{_R}RequiredField", "") == "y" or ref.get("Mandatory") == "Yes"
    row = {
        "field_name": variable,
        "form_name": form,
        "section_header": item.get(f"{_R}SectionHeader", ""),
        "field_type": field_type,
        "field_label": _label(item.find(f"{_O}Question")),
        "select_choices_or_calculations": choices,
        "field_note": item.get(f"{_R}FieldNote", ""),
        "text_validation_type_or_show_slider_number": item.get(f"{_R}TextValidationType", ""),
        "text_validation_min": minimum,
        "text_validation_max": maximum,
        "identifier": item.get(f"{_R}Identifier", ""),
        "branching_logic": item.get(f"{_R}BranchingLogic", ""),
        "required_field": "y" if required else "",
        "custom_alignment": item.get(f"{_R}CustomAlignment", ""),
        "question_number": item.get(f"{_R}QuestionNumber", ""),
        "matrix_group_name": item.get(f"{_R}MatrixGroupName", ""),
        "matrix_ranking": item.get(f"{_R}MatrixRanking", ""),
        "field_annotation": item.get(f"{_R}FieldAnnotation", ""),
    }
    try:
        built = field_from_metadata(row)
    except DictionaryError as exc:
        raise ProjectXmlError(parsed.source, str(exc)) from exc
    parsed.fields.append(built)
    parsed.form_of[variable] = form
    if built.validation.startswith("datetime"):
        parsed.datetime_fields.add(variable)
    if field_type in ("file", "signature"):
        parsed.file_fields.add(variable)


def _choices_for(item: ET.Element, field_type: str, code_list: ET.Element | None,
                 source: str, variable: str) -> str:
    """The select_choices_or_calculations text of one field."""
    if field_type == "calc":
        return item.get(f"{_R}Calculation", "")
    if field_type == "checkbox":
        choices = code_list.get(f"{_R}CheckboxChoices") if code_list is not None else None
        if not choices:
            raise ProjectXmlError(source, f"checkbox field {variable!r}: its <CodeList> has no "
                                  "redcap:CheckboxChoices")
        return choices
    if field_type == "slider":
        return item.get(f"{_R}SliderLabels", "")
    if field_type in ("dropdown", "radio", "sql") and code_list is not None:
        return _code_list_text(code_list)
    if field_type == "text":
        return item.get(f"{_R}OntologySearch", "")
    return ""


def _float(value: str | None, default: float = 0) -> float:
    try:
        number = float(value) if value not in (None, "") else default
    except ValueError:
        return default
    return int(number) if number == int(number) else number


def _read_events(mdv: ET.Element, source: str
                 ) -> tuple[list[Event], list[Arm], list[tuple[int, str, str]]]:
    defs = {e.get("OID", ""): e for e in mdv.findall(f"{_O}StudyEventDef")}
    protocol = mdv.find(f"{_O}Protocol")
    order = [r.get("StudyEventOID", "") for r in protocol.findall(f"{_O}StudyEventRef")] \
        if protocol is not None else []
    order += [oid for oid in defs if oid not in order]
    # REDCap treats a single event as a classic project (ODM::parseOdm does the same).
    if len(order) <= 1:
        return [], [], []
    events: list[Event] = []
    arms: dict[int, str] = {}
    mapping: list[tuple[int, str, str]] = []
    for oid in order:
        d = defs.get(oid)
        if d is None:
            raise ProjectXmlError(source, f"<StudyEventDef OID={oid!r}> named in <Protocol> "
                                  "is missing")
        unique = d.get(f"{_R}UniqueEventName") or oid.removeprefix("Event.")
        try:
            arm_num = int(d.get(f"{_R}ArmNum", "1") or 1)
        except ValueError as exc:
            raise ProjectXmlError(source, f"event {unique!r}: redcap:ArmNum is not a number") \
                from exc
        arms.setdefault(arm_num, d.get(f"{_R}ArmName", f"Arm {arm_num}"))
        events.append(Event(
            unique_event_name=unique,
            event_name=d.get(f"{_R}EventName") or d.get("Name", unique),
            arm_num=arm_num,
            day_offset=_float(d.get(f"{_R}DayOffset")),
            offset_min=_float(d.get(f"{_R}OffsetMin")),
            offset_max=_float(d.get(f"{_R}OffsetMax")),
            custom_event_label=d.get(f"{_R}CustomEventLabel", ""),
        ))
        for ref in d.findall(f"{_O}FormRef"):
            form = ref.get(f"{_R}FormName") or ref.get("FormOID", "").removeprefix("Form.")
            mapping.append((arm_num, unique, form))
    return events, [Arm(n, arms[n]) for n in sorted(arms)], mapping


def _read_repeating(gv: ET.Element, longitudinal: bool) -> list[RepeatingSetup]:
    setup: list[RepeatingSetup] = []
    block = gv.find(f"{_R}RepeatingInstrumentsAndEvents")
    if block is None:
        return setup
    for elem in block.iter():
        event = elem.get(f"{_R}UniqueEventName", "") if longitudinal else ""
        if elem.tag == f"{_R}RepeatingInstrument":
            setup.append(RepeatingSetup(event, elem.get(f"{_R}RepeatInstrument", ""),
                                        elem.get(f"{_R}CustomLabel", "")))
        elif elem.tag == f"{_R}RepeatingEvent":
            setup.append(RepeatingSetup(event, "", elem.get(f"{_R}CustomLabel", "")))
    return setup


def dag_unique_name(group_name: str) -> str:
    """REDCap's unique DAG name: lower case, letters/digits/underscores only, at most 18 chars."""
    name = re.sub(r"[^a-z0-9_]", "", group_name.strip().lower().replace(" ", "_"))
    return name[:18]


def _read_dags(gv: ET.Element) -> list[DataAccessGroup]:
    dags = []
    for elem in gv.iter(f"{_R}DataAccessGroups"):
        name = elem.get("group_name", "")
        unique = elem.get("unique_group_name") or dag_unique_name(name)
        dags.append(DataAccessGroup(unique, name))
    return dags


# ---------------------------------------------------------------- data


def _instance(value: str | None, source: str, record: str, what: str) -> int:
    try:
        return int(value or "1")
    except ValueError as exc:
        raise ProjectXmlError(source, f"record {record!r}: {what} {value!r} is not a number") \
            from exc


def _read_clinical(clinical: ET.Element, parsed: _Parsed, project: ProjectDefinition) -> None:
    source = parsed.source
    rows: dict[tuple[str, str, str, int | None], RecordRow] = {}
    known_events = {e.unique_event_name for e in project.events}
    for subject in clinical.findall(f"{_O}SubjectData"):
        record = subject.get("SubjectKey")
        if not record:
            raise ProjectXmlError(source, "<SubjectData> without SubjectKey")
        dag = subject.get(f"{_R}DataAccessGroup")
        if dag:
            project.record_dags[record] = dag
        event_elems = subject.findall(f"{_O}StudyEventData")
        if not project.is_longitudinal and event_elems:
            raise ProjectXmlError(source, f"record {record!r}: <StudyEventData> in a project "
                                  "without events")
        if project.is_longitudinal and subject.findall(f"{_O}FormData"):
            raise ProjectXmlError(source, f"record {record!r}: <FormData> outside "
                                  "<StudyEventData> in a longitudinal project")
        containers = [(e, e.get(f"{_R}UniqueEventName")
                       or e.get("StudyEventOID", "").removeprefix("Event."),
                       e.get("StudyEventRepeatKey")) for e in event_elems] or [(subject, "", None)]
        for container, event, event_key in containers:
            if project.is_longitudinal and event not in known_events:
                raise ProjectXmlError(source, f"record {record!r}: data for event {event!r}, "
                                      "which the project does not define")
            if event_key is not None:
                _instance(event_key, source, record, "StudyEventRepeatKey")
            for form_data in container.findall(f"{_O}FormData"):
                form = form_data.get("FormOID", "").removeprefix("Form.")
                if project.is_longitudinal and project.is_repeating_event(event):
                    key = (record, event, "", _instance(event_key, source, record,
                                                        "StudyEventRepeatKey"))
                elif form in project.repeating_forms(event):
                    key = (record, event, form, _instance(form_data.get("FormRepeatKey"),
                                                          source, record, "FormRepeatKey"))
                else:
                    key = (record, event, "", None)
                row = rows.get(key)
                if row is None:
                    row = rows[key] = RecordRow(*key)
                _read_items(form_data, row, parsed, project)
    project.rows = list(rows.values())


def _read_items(form_data: ET.Element, row: RecordRow, parsed: _Parsed,
                project: ProjectDefinition) -> None:
    for elem in form_data.iter():
        if elem.tag == f"{_O}ItemData":
            column, value = elem.get("ItemOID", ""), elem.get("Value", "")
        elif elem.tag == f"{_O}ItemDataBase64Binary":
            # File contents are not kept; the export keeps the document name.
            column, value = elem.get("ItemOID", ""), elem.get(f"{_R}DocName", "")
        else:
            continue
        if column == "redcap_data_access_group":
            if value:
                project.record_dags[row.record] = value
            continue
        if column in _PSEUDO_FIELDS or (column.endswith("_timestamp")
                                        and column not in parsed.form_of):
            continue
        if column in parsed.checkbox_columns:
            if value == "1":
                row.values[column] = value
            continue
        if column not in parsed.form_of and not _is_status(column, project):
            raise ProjectXmlError(parsed.source, f"record {row.record!r}: <ItemData "
                                  f"ItemOID={column!r}> is not a field of the project")
        if value == "":
            continue
        if column in parsed.datetime_fields:
            value = value.replace("T", " ")  # REDCap writes datetimes with a "T"
        if row.values.get(column, value) != value:  # the same record/event given twice
            raise ProjectXmlError(parsed.source, f"record {row.record!r}, event "
                                  f"{row.event or '-'!r}: field {column!r} has two values "
                                  f"({row.values[column]!r} and {value!r})")
        row.values[column] = value


def _is_status(column: str, project: ProjectDefinition) -> bool:
    return column.endswith("_complete") and column[: -len("_complete")] in set(
        project.dictionary.forms)


# ---------------------------------------------------------------- writing

# Written when project.settings has no "creation_datetime": output never depends on the clock.
DEFAULT_CREATION_DATETIME = "2024-01-01T00:00:00"
_NUMBER_VALIDATIONS = re.compile(r"^(float|number(_\ddp)?(_comma_decimal)?)$")
_MC_TYPES = frozenset({"sql", "radio", "select", "dropdown", "yesno", "truefalse"})
_RANGE_MESSAGE = ("The value you provided is outside the suggested range ({lo} - {hi}). "
                  "This value is admissible, but you may wish to double check it.")


def _attr(value: str) -> str:
    """Escape an attribute value as REDCap does (htmlspecialchars, ENT_QUOTES); keep newlines."""
    value = (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
             .replace('"', "&quot;").replace("'", "&#039;"))
    # A raw newline in an attribute is normalised to a space by every XML parser.
    return value.replace("\r", "&#13;").replace("\n", "&#10;").replace("\t", "&#9;")


def _esc(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _study_oid(title: str) -> str:
    """REDCap's ODM::getStudyOID without the 'Project.' prefix."""
    words = re.sub(r"[^a-zA-Z0-9 ]", "", title).split(" ")
    return "".join(w[:1].upper() + w[1:] for w in words)[:30]


def _odm_data_type(field_type: str, validation: str) -> str:
    if field_type == "text":
        if validation in ("int", "integer"):
            return "integer"
        if _NUMBER_VALIDATIONS.match(validation):
            return "float"
        if validation.startswith("date_"):
            return "date"
        if validation.startswith("datetime_seconds"):
            return "datetime"
        if validation.startswith("datetime"):
            return "partialDatetime"
        if validation == "time":
            return "partialTime"
        return "text"
    return {"calc": "float", "slider": "integer", "checkbox": "boolean", "yesno": "boolean",
            "truefalse": "boolean"}.get(field_type, "text")


def _length(f: Field) -> int:
    if f.is_checkbox:
        return 1
    if f.field_type in _MC_TYPES:
        return max([1, *(len(c.code) for c in f.choices)])
    return 999


def _strip_html(text: str) -> str:
    return re.sub(r"<[^>]*>", "", re.sub(r"<br\s*/?>", "\n", text, flags=re.I))


def _translated(text: str, indent: str = "") -> str:
    """TranslatedText, plus REDCap's FormattedTranslatedText when the text holds HTML."""
    out = f"<TranslatedText>{_esc(_strip_html(text))}</TranslatedText>"
    if "<" in text and ">" in text:
        out += f"<redcap:FormattedTranslatedText>{_esc(text)}</redcap:FormattedTranslatedText>"
    return indent + out


@dataclass
class _Layout:
    """Item groups of the project: REDCap starts one at each form and each section header."""

    groups: dict[str, list[str]] = field(default_factory=dict)  # group OID -> item OIDs
    form_groups: dict[str, list[str]] = field(default_factory=dict)  # form -> group OIDs
    group_of: dict[str, str] = field(default_factory=dict)  # item OID -> group OID
    form_of: dict[str, str] = field(default_factory=dict)  # item OID -> form
    field_of: dict[str, Field] = field(default_factory=dict)  # item OID -> field


def _layout(project: ProjectDefinition, with_dag: bool) -> _Layout:
    lay = _Layout()
    record_id = project.record_id_field
    for form in project.dictionary.forms:
        current, section = "", ""
        for f in project.dictionary.form_fields(form):
            # As ODM::getOdmItemGroups: a new group whenever the section header value changes,
            # so the field after a headed one opens a group too.
            if not current or f.section_header != section:
                current = f"{form}.{f.name}"
                lay.groups[current] = []
                lay.form_groups.setdefault(form, []).append(current)
            oids = list(f.export_columns) if f.is_checkbox else [f.name]
            if f.name == record_id and with_dag:
                oids.append("redcap_data_access_group")
            section = f.section_header
            for oid in oids:
                lay.groups[current].append(oid)
                lay.group_of[oid], lay.form_of[oid], lay.field_of[oid] = current, form, f
        status = f"{form}_complete"
        group = f"{form}.{status}"
        lay.groups[group] = [status]
        lay.form_groups.setdefault(form, []).append(group)
        lay.group_of[status], lay.form_of[status] = group, form
    return lay


def write_project_xml(project: ProjectDefinition) -> bytes:
    """Serialise a project as REDCap 14.x writes its project XML (deterministic, no clock)."""
    created = project.settings.get("creation_datetime") or DEFAULT_CREATION_DATETIME
    study_oid = f"Project.{_study_oid(project.title)}"
    stamp = f"{created[:10]}_{created[11:16].replace(':', '')}"
    mdv_oid = f"Metadata.{_study_oid(project.title)}_{stamp}"
    with_dag = bool(project.data_access_groups or project.record_dags)
    lay = _layout(project, with_dag)
    title = _attr(project.title)
    parts = [
        '<?xml version="1.0" encoding="UTF-8" ?>\n',
        f'<ODM xmlns="{ODM_NS}" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" '
        f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:redcap="{REDCAP_NS}" '
        f'xsi:schemaLocation="{ODM_NS} schema/odm/ODM1-3-1.xsd" ODMVersion="1.3.1" '
        f'FileOID="000-00-0000" FileType="Snapshot" Description="{title}" '
        f'AsOfDateTime="{_attr(created)}" CreationDateTime="{_attr(created)}" '
        f'SourceSystem="REDCap" SourceSystemVersion="{_attr(project.source_system_version)}">\n',
        f'<Study OID="{study_oid}">\n',
        *_global_variables(project),
        f'<MetaDataVersion OID="{mdv_oid}" Name="{title}" '
        f'redcap:RecordIdField="{_attr(project.record_id_field)}">\n',
        *_protocol(project),
        *_form_defs(project, lay),
        *_item_group_defs(project, lay),
        *_item_defs(project, lay),
        "</MetaDataVersion>\n</Study>\n",
        f'<ClinicalData StudyOID="{study_oid}" MetaDataVersionOID="{mdv_oid}">\n',
        *_clinical_data(project, lay),
        "</ClinicalData>\n</ODM>",
    ]
    return "".join(parts).encode("utf-8")


def _global_variables(project: ProjectDefinition) -> list[str]:
    title = _esc(project.title)
    out = [
        "<GlobalVariables>\n",
        f"\t<StudyName>{title}</StudyName>\n",
        f"\t<StudyDescription>This file contains the metadata, events, and data for REDCap "
        f"project \"{title}\".</StudyDescription>\n",
        f"\t<ProtocolName>{title}</ProtocolName>\n",
    ]
    for tag, key in SETTING_TAGS.items():
        out.append(f"\t<redcap:{tag}>{_esc(project.settings.get(key, ''))}</redcap:{tag}>\n")
    out.append(f"\t<redcap:MissingDataCodes>{_esc(project.missing_data_codes)}"
               "</redcap:MissingDataCodes>\n")
    if project.repeating:
        out.append("\t<redcap:RepeatingInstrumentsAndEvents>\n")
        default_event = project.events[0].unique_event_name if project.events else ""
        by_event: dict[str, list[RepeatingSetup]] = {}
        for r in project.repeating:
            by_event.setdefault(r.event or default_event or "event_1_arm_1", []).append(r)
        for event, setups in by_event.items():
            forms = [r for r in setups if r.form]
            if forms:
                out.append("\t\t<redcap:RepeatingInstruments>\n")
                out += [f'\t\t\t<redcap:RepeatingInstrument '
                        f'redcap:UniqueEventName="{_attr(event)}" '
                        f'redcap:RepeatInstrument="{_attr(r.form)}" '
                        f'redcap:CustomLabel="{_attr(r.custom_label)}"/>\n' for r in forms]
                out.append("\t\t</redcap:RepeatingInstruments>\n")
            if len(forms) < len(setups):
                out.append('\t\t<redcap:RepeatingEvent '
                           f'redcap:UniqueEventName="{_attr(event)}"/>\n')
        out.append("\t</redcap:RepeatingInstrumentsAndEvents>\n")
    if project.data_access_groups:
        out.append("\t<redcap:DataAccessGroupsGroup>\n")
        for dag in project.data_access_groups:
            # REDCap derives the unique name from the group name on import; say it only when
            # the derivation would give another one.
            extra = ("" if dag_unique_name(dag.name) == dag.unique_name
                     else f' unique_group_name="{_attr(dag.unique_name)}"')
            out.append(f'\t\t<redcap:DataAccessGroups group_name="{_attr(dag.name)}"{extra}/>\n')
        out.append("\t</redcap:DataAccessGroupsGroup>\n")
    out.append("</GlobalVariables>\n")
    return out


def _num(value: float) -> str:
    return str(int(value)) if float(value) == int(value) else str(value)


def _protocol(project: ProjectDefinition) -> list[str]:
    if not project.is_longitudinal:
        return []
    arm_names = {a.arm_num: a.name for a in project.arms}
    out = ["\t<Protocol>\n"]
    out += [f'\t\t<StudyEventRef StudyEventOID="Event.{_attr(e.unique_event_name)}" '
            f'OrderNumber="{i}" Mandatory="No"/>\n' for i, e in enumerate(project.events, 1)]
    out.append("\t</Protocol>\n")
    for e in project.events:
        arm = arm_names.get(e.arm_num, f"Arm {e.arm_num}")
        out.append(
            f'\t<StudyEventDef OID="Event.{_attr(e.unique_event_name)}" '
            f'Name="{_attr(f"{e.event_name} (Arm {e.arm_num}: {arm})")}" Type="Common" '
            f'Repeating="No" redcap:EventName="{_attr(e.event_name)}" '
            f'redcap:CustomEventLabel="{_attr(e.custom_event_label)}" '
            f'redcap:UniqueEventName="{_attr(e.unique_event_name)}" redcap:ArmNum="{e.arm_num}" '
            f'redcap:ArmName="{_attr(arm)}" redcap:DayOffset="{_num(e.day_offset)}" '
            f'redcap:OffsetMin="{_num(e.offset_min)}" redcap:OffsetMax="{_num(e.offset_max)}">\n')
        for i, form in enumerate(project.forms_for_event(e.unique_event_name), 1):
            out.append(f'\t\t<FormRef FormOID="Form.{form}" OrderNumber="{i}" Mandatory="No" '
                       f'redcap:FormName="{form}"/>\n')
        out.append("\t</StudyEventDef>\n")
    return out


def _form_defs(project: ProjectDefinition, lay: _Layout) -> list[str]:
    out = []
    for form in project.dictionary.forms:
        label = project.settings.get(f"{FORM_LABEL_PREFIX}{form}") or default_form_label(form)
        out.append(f'\t<FormDef OID="Form.{form}" Name="{_attr(label)}" Repeating="No" '
                   f'redcap:FormName="{form}">\n')
        out += [f'\t\t<ItemGroupRef ItemGroupOID="{g}" Mandatory="No"/>\n'
                for g in lay.form_groups[form]]
        out.append("\t</FormDef>\n")
    return out


def _item_group_defs(project: ProjectDefinition, lay: _Layout) -> list[str]:
    out = []
    for group, oids in lay.groups.items():
        form = lay.form_of[oids[0]]
        first = lay.field_of.get(oids[0])
        if first is None:
            name = "Form Status"
        else:
            name = first.section_header or project.settings.get(
                f"{FORM_LABEL_PREFIX}{form}") or default_form_label(form)
        out.append(f'\t<ItemGroupDef OID="{group}" Name="{_attr(name)}" Repeating="No">\n')
        for oid in oids:
            f = lay.field_of.get(oid)
            mandatory = "Yes" if f is not None and f.required else "No"
            variable = f.name if f is not None and oid != "redcap_data_access_group" else oid
            out.append(f'\t\t<ItemRef ItemOID="{oid}" Mandatory="{mandatory}" '
                       f'redcap:Variable="{variable}"/>\n')
        out.append("\t</ItemGroupDef>\n")
    return out


def _item_defs(project: ProjectDefinition, lay: _Layout) -> list[str]:
    items: list[str] = []
    code_lists: list[str] = []
    for oid in lay.form_of:
        f = lay.field_of.get(oid)
        if oid == "redcap_data_access_group":
            items.append(f'\t<ItemDef OID="{oid}" Name="{oid}" DataType="text" Length="999" '
                         f'redcap:Variable="{oid}">\n'
                         "\t\t<Question><TranslatedText>Data Access Group</TranslatedText>"
                         "</Question>\n\t</ItemDef>\n")
        elif f is None:  # form status
            items.append(f'\t<ItemDef OID="{oid}" Name="{oid}" DataType="text" Length="1" '
                         f'redcap:Variable="{oid}" redcap:FieldType="select" '
                         'redcap:SectionHeader="Form Status">\n'
                         "\t\t<Question><TranslatedText>Complete?</TranslatedText></Question>\n"
                         f'\t\t<CodeListRef CodeListOID="{oid}.choices"/>\n\t</ItemDef>\n')
            code_lists.append(_code_list(oid, oid, "text", (("0", "Incomplete"),
                              ("1", "Unverified"), ("2", "Complete")), ""))
        else:
            item, code_list = _item_def(oid, f)
            items.append(item)
            code_lists.append(code_list)
    return items + code_lists


def _item_def(oid: str, f: Field) -> tuple[str, str]:
    xml_type = DICT_TO_XML_TYPE.get(f.field_type, f.field_type)
    data_type = _odm_data_type(f.field_type, f.validation)
    attrs = [f'OID="{oid}" Name="{oid}" DataType="{data_type}" Length="{_length(f)}"']
    if f.validation == "float":
        attrs.append('SignificantDigits="1"')
    attrs.append(f'redcap:Variable="{f.name}" redcap:FieldType="{xml_type}"')
    optional = (
        ("TextValidationType", f.validation), ("FieldNote", f.note),
        ("SectionHeader", f.section_header),
        ("Calculation", f.choices_or_calc if f.field_type == "calc" else ""),
        ("Identifier", "y" if f.identifier else ""), ("RequiredField", "y" if f.required else ""),
        ("MatrixRanking", "y" if f.matrix_ranking == "y" else ""),
        ("OntologySearch", f.choices_or_calc if f.field_type == "text" else ""),
        ("SliderLabels", f.choices_or_calc if f.field_type == "slider" else ""),
        ("BranchingLogic", f.branching_logic), ("CustomAlignment", f.custom_alignment),
        ("QuestionNumber", f.question_number), ("MatrixGroupName", f.matrix_group),
        ("FieldAnnotation", f.annotation),
    )
    attrs += [f'redcap:{name}="{_attr(value)}"' for name, value in optional if value]
    body = [f"\t<ItemDef {' '.join(attrs)}>\n",
            f"\t\t<Question>{_translated(f.label)}</Question>\n"]
    code_list = ""
    if f.is_checkbox:
        code_list = _code_list(oid, f.name, "boolean", (("1", "Checked"), ("0", "Unchecked")),
                               f.choices_or_calc)
    elif f.choices and f.field_type != "calc":
        code_list = _code_list(oid, f.name, data_type, tuple((c.code, c.label)
                                                              for c in f.choices), "")
    if code_list:
        body.append(f'\t\t<CodeListRef CodeListOID="{oid}.choices"/>\n')
    if f.validation_min or f.validation_max:
        message = _RANGE_MESSAGE.format(lo=f.validation_min or "no limit",
                                        hi=f.validation_max or "no limit")
        for comparator, value in (("GE", f.validation_min), ("LE", f.validation_max)):
            if value:
                body.append(f'\t\t<RangeCheck Comparator="{comparator}" SoftHard="Soft">\n'
                            f"\t\t\t<CheckValue>{_esc(value)}</CheckValue>\n"
                            f"\t\t\t<ErrorMessage><TranslatedText>{_esc(message)}"
                            "</TranslatedText></ErrorMessage>\n\t\t</RangeCheck>\n")
    body.append("\t</ItemDef>\n")
    return "".join(body), code_list


def _code_list(oid: str, variable: str, data_type: str, items: tuple[tuple[str, str], ...],
               checkbox_choices: str) -> str:
    extra = f' redcap:CheckboxChoices="{_attr(checkbox_choices)}"' if checkbox_choices else ""
    out = [f'\t<CodeList OID="{oid}.choices" Name="{oid}" DataType="{data_type}" '
           f'redcap:Variable="{variable}"{extra}>\n']
    out += [f'\t\t<CodeListItem CodedValue="{_attr(code)}"><Decode>{_translated(label)}'
            "</Decode></CodeListItem>\n" for code, label in items]
    out.append("\t</CodeList>\n")
    return "".join(out)


def _clinical_data(project: ProjectDefinition, lay: _Layout) -> list[str]:
    by_record: dict[str, list[RecordRow]] = {}
    for row in project.rows:
        by_record.setdefault(row.record, []).append(row)
    out: list[str] = []
    for record, rows in by_record.items():
        out.append(f'\t<SubjectData SubjectKey="{_attr(record)}" '
                   f'redcap:RecordIdField="{_attr(project.record_id_field)}">\n')
        open_event: tuple[str, int] | None = None
        dag = project.record_dags.get(record, "")
        for row in rows:
            if project.is_longitudinal:
                event_key = row.repeat_instance if (
                    project.is_repeating_event(row.event) and row.repeat_instance) else 1
                if open_event != (row.event, event_key):
                    if open_event is not None:
                        out.append("\t\t</StudyEventData>\n")
                    out.append(f'\t\t<StudyEventData StudyEventOID="Event.{_attr(row.event)}" '
                               f'StudyEventRepeatKey="{event_key}" '
                               f'redcap:UniqueEventName="{_attr(row.event)}">\n')
                    open_event = (row.event, event_key)
            out += _row_forms(project, lay, row, dag)
            dag = ""  # REDCap's group assignment is per record: write it once
        if open_event is not None:
            out.append("\t\t</StudyEventData>\n")
        out.append("\t</SubjectData>\n")
    return out


def _row_forms(project: ProjectDefinition, lay: _Layout, row: RecordRow, dag: str) -> list[str]:
    """FormData elements of one flat row, forms and items in dictionary order."""
    where = f"record {row.record!r}" + (f", event {row.event!r}" if row.event else "")
    allowed = set(project.forms_for_event(row.event))
    by_form: dict[str, dict[str, str]] = {}
    for column, value in row.values.items():
        form = lay.form_of.get(column)
        if form is None:
            raise ProjectXmlError("<project>", f"{where}: value for unknown field {column!r}")
        if row.repeat_instrument and form != row.repeat_instrument:
            if column == project.record_id_field:
                continue  # REDCap leaves the record id out of repeating rows too
            raise ProjectXmlError("<project>", f"{where}: field {column!r} of form {form!r} "
                                  f"in a row of repeating instrument {row.repeat_instrument!r}")
        if form not in allowed:
            raise ProjectXmlError("<project>", f"{where}: form {form!r} of field {column!r} "
                                  "is not designated to the event")
        by_form.setdefault(form, {})[column] = value
    if dag:
        first = lay.form_of[project.record_id_field]
        by_form.setdefault(first, {})["redcap_data_access_group"] = dag
    key = row.repeat_instance if row.repeat_instrument and row.repeat_instance else 1
    out = []
    for form in project.dictionary.forms:
        values = by_form.get(form)
        if not values:
            continue
        out.append(f'\t\t\t<FormData FormOID="Form.{form}" FormRepeatKey="{key}">\n')
        for group in lay.form_groups[form]:
            # A group is written when it holds a real value, not only implied unticked boxes.
            if not any(values.get(oid) for oid in lay.groups[group]):
                continue
            items = [_item_data(oid, values.get(oid), lay) for oid in lay.groups[group]]
            out.append(f'\t\t\t\t<ItemGroupData ItemGroupOID="{group}" ItemGroupRepeatKey="1">\n')
            out += [i for i in items if i]
            out.append("\t\t\t\t</ItemGroupData>\n")
        out.append("\t\t\t</FormData>\n")
    return out


def _item_data(oid: str, value: str | None, lay: _Layout) -> str:
    f = lay.field_of.get(oid)
    if f is not None and f.is_checkbox and oid != f.name:
        # Real exports carry every checkbox option of a form that has data, ticked or not.
        value = "1" if value == "1" else "0"
    if value is None or value == "":
        return ""
    if f is not None and f.field_type in ("file", "signature"):
        return (f'\t\t\t\t\t<ItemDataBase64Binary ItemOID="{oid}" redcap:DocName="{_attr(value)}" '
                'redcap:MimeType="application/octet-stream"></ItemDataBase64Binary>\n')
    if f is not None and f.validation.startswith("datetime"):
        value = value.replace(" ", "T")
    return f'\t\t\t\t\t<ItemData ItemOID="{oid}" Value="{_attr(value)}"/>\n'
