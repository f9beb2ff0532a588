"""Deterministic FHIR resource ids: uuid5 of (kind, study, record, event, form, instance, field)."""

from __future__ import annotations

import hashlib
import uuid
from json.encoder import encode_basestring  # the C version when there is one

# Fixed forever: changing it changes every id and makes re-publishing duplicate resources.
# It is uuid5(NAMESPACE_URL, "urn:imt-etl:fhir-resource-ids"); tests check the derivation.
NAMESPACE = uuid.UUID("33ee380c-7e0b-5e10-9e26-2cb9758d516c")

Part = str | int | None


def _normalise(part: Part) -> str | None:
    # bool is an int subclass: True would silently become "True"; refuse it instead.
    if isinstance(part, bool) or not isinstance(part, str | int | None):
        raise TypeError(f"id part must be str, int or None, not {type(part).__name__}")
    # 3 and "3" name the same repeat instance, whichever way the caller holds it.
    return str(part) if isinstance(part, int) else part


_NAMESPACE_BYTES = NAMESPACE.bytes
# The RFC 4122 variant replaces the top two bits of byte 8: its first hex digit becomes 8-b.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def resource_id(kind: str, *parts: Part) -> str:
    """The id of a resource of type `kind` named by `parts` (a 36-character uuid string).

    The name hashed is the JSON list [kind, *parts], so ("a|b", "c") and ("a", "b|c") differ
    and None ("no instance") differs from "" and from "None".
    """
    return _uuid5(_NAMESPACE_BYTES + _name(kind, parts).encode("utf-8"))


def _name(kind: str, parts: tuple[Part, ...]) -> str:
    if not kind:
        raise ValueError("resource kind is empty")
    return f"[{_json(kind)}, {_joined(parts)}]" if parts else f"[{_json(kind)}]"


# json.dumps([...], ensure_ascii=False) writes a list's strings with encode_basestring and joins
# the items with ", ": the same, called directly (the encoder is a hot spot when every
# Observation gets an id).


def _json(part: Part) -> str:
    """A part as JSON, normalised (_normalise)."""
    if type(part) is str:
        return encode_basestring(part)
    if part is None:
        return "null"
    if type(part) is int:  # not a bool (see _normalise)
        return f'"{part}"'
    return encode_basestring(_normalise(part))  # an int subclass as text; others raise


def _joined(parts: tuple[Part, ...]) -> str:
    """", ".join(_json(p) for p in parts), without a call per part."""
    return ", ".join([encode_basestring(p) if type(p) is str else _json(p) for p in parts])


# Many ids share every part but the last (each Observation of one form at one visit). The JSON
# list is "[" + ", ".join(encoded parts) + "]", so the name's bytes split into a prefix made once
# for the shared parts and a tail per last part, and the id is the very same.


def id_prefix(kind: str, *parts: Part) -> bytes:
    """What resource_id(kind, *parts, last) hashes before its last part (see prefixed_id)."""
    return _NAMESPACE_BYTES + (_name(kind, parts)[:-1] + ", ").encode("utf-8")


def id_tail(last: Part) -> bytes:
    """What resource_id(kind, *parts, last) hashes after id_prefix(kind, *parts)."""
    return (_json(last) + "]").encode("utf-8")


def shared_name(*parts: Part) -> str:
    """`parts` as they appear in the name of every id they begin (after its kind): for ids of
    several kinds with the same parts (see named_prefix)."""
    if not parts:
        raise ValueError("no name parts")
    return _joined(parts)


def named_prefix(kind: str, shared: str) -> bytes:
    """id_prefix(kind, *parts) for shared = shared_name(*parts)."""
    return _NAMESPACE_BYTES + f"[{_json(kind)}, {shared}, ".encode()


def prefixed_id(prefix: bytes, tail: bytes) -> str:
    """resource_id(kind, *parts, last) from id_prefix(kind, *parts) and id_tail(last)."""
    h = hashlib.sha1(prefix + tail).hexdigest()  # _uuid5, inline: called once per Observation
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_NO_FIELD = id_tail("")


def _uuid5(data: bytes) -> str:
    """str(uuid.uuid5(NAMESPACE, name)) for data = NAMESPACE.bytes + name in UTF-8, without
    building UUID objects (RFC 4122 section 4.3): the SHA-1's first 16 bytes in hex, with the
    version (5) as the 13th digit and the variant in the 17th."""
    h = hashlib.sha1(data).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def record_resource_id(
    kind: str,
    study: str,
    record: str,
    event: str = "",
    instrument: str = "",
    instance: int | str | None = None,
    field: str = "",
) -> str:
    """Id of a resource derived from REDCap data at (record, event, instrument, instance, field).

    Leave the trailing parts empty for coarser resources (a Patient needs only the record).
    """
    return resource_id(kind, study, record, event, instrument, instance, field)


def questionnaire_id(study: str, form: str, version: str) -> str:
    return resource_id("Questionnaire", study, form, version)


def questionnaire_response_id(
    study: str, record: str, event: str, form: str, instance: int | str | None
) -> str:
    return record_resource_id("QuestionnaireResponse", study, record, event, form, instance)


def observation_id(
    study: str, record: str, event: str, form: str, instance: int | str | None, field: str
) -> str:
    return record_resource_id("Observation", study, record, event, form, instance, field)



def response_and_observation_prefix(
    study: str, record: str, event: str, form: str, instance: int | str | None
) -> tuple[str, bytes]:
    """questionnaire_response_id(study, record, event, form, instance), and the prefix of the
    ids of the Observations with those parts: observation_id(study, ..., field) is
    prefixed_id(<prefix>, id_tail(field)). Both from one encoding of the parts."""
    shared = shared_name(study, record, event, form, instance)
    # record_resource_id names every resource by all 7 parts: a response's field is "".
    response = prefixed_id(named_prefix("QuestionnaireResponse", shared), _NO_FIELD)
    return response, named_prefix("Observation", shared)


def patient_id(study: str, record: str) -> str:
    return record_resource_id("Patient", study, record)


def research_subject_id(study: str, record: str) -> str:
    return record_resource_id("ResearchSubject", study, record)


def encounter_id(study: str, record: str, event: str) -> str:
    return record_resource_id("Encounter", study, record, event)


def research_study_id(study: str) -> str:
    return resource_id("ResearchStudy", study)
