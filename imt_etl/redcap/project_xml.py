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
    if root.get("CreationDateTime"):
        settings["creation_datetime"] = root.get("CreationDateTime", "")
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
        row.values[column] = value


def _is_status(column: str, project: ProjectDefinition) -> bool:
    return column.endswith("_complete") and column[: -len("_complete")] in set(
        project.dictionary.forms)
