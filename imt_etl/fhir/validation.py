"""Independent FHIR R4 checks (fhirkit-rs and the HL7 R4 JSON schema) and an R4B model gate."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

import fhirkit
import jsonschema
import orjson

logger = logging.getLogger(__name__)

SCHEMA_FILE = "fhir.schema.json"
_MAX_MESSAGE = 240  # jsonschema messages quote the whole instance; keep problems readable


_REF_PREFIX = "#/definitions/"


@cache
def _definitions() -> dict[str, Any]:
    """The vendored schema's definitions, read and linked once per process (the file is 3.4 MB).

    Every `{"$ref": "#/definitions/X"}` is replaced by the definition object itself (so the
    structure has cycles, e.g. Extension.extension) and description strings are dropped: the
    validator then never resolves a reference, which more than doubles its speed.
    """
    text = resources.files("imt_etl.fhir").joinpath("schema", SCHEMA_FILE).read_text("utf-8")
    definitions = json.loads(text)["definitions"]
    for definition in definitions.values():
        _link(definition, definitions)
    return definitions


def _link(node: Any, definitions: dict[str, Any]) -> None:
    """Drop annotations and inline local `$ref`s below `node` (a tree: no cycles yet)."""
    children: Iterable[tuple[Any, Any]]
    if isinstance(node, dict):
        # Only a string is an annotation: a *property* named "description" holds a schema.
        if isinstance(node.get("description"), str):
            del node["description"]
        children = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    else:
        return
    for key, child in children:
        ref = child.get("$ref") if isinstance(child, dict) else None
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            node[key] = definitions[ref.removeprefix(_REF_PREFIX)]
        else:
            _link(child, definitions)


@cache
def _validator(resource_type: str) -> jsonschema.Draft6Validator:
    """A validator for one resource type, built on the shared linked definitions.

    Validating against the top-level schema would try all ~150 resource branches of its
    `oneOf` for every resource; starting at the type's own definition avoids that.
    """
    return jsonschema.Draft6Validator(_definitions()[resource_type])


def resource_types() -> frozenset[str]:
    """Resource types the R4 schema knows (its discriminator mapping)."""
    return frozenset(fhirkit.RESOURCE_TYPES) & frozenset(_definitions())


def _resource_type(resource: object) -> tuple[str | None, list[str]]:
    if not isinstance(resource, Mapping):
        return None, [f"not a JSON object: {type(resource).__name__}"]
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return None, ["resourceType is missing"]
    if rtype not in _definitions() or rtype not in fhirkit.RESOURCE_TYPES:
        return None, [f"resourceType {rtype!r} is not an R4 resource"]
    return rtype, []


def validate_r4(resource: Mapping[str, Any]) -> list[str]:
    """Problems found by fhirkit-rs and by the HL7 R4 JSON schema; [] means both accept it.

    Each problem starts with its source (`fhirkit:` or `schema:`) and the element path.
    """
    rtype, problems = _resource_type(resource)
    if rtype is None:
        return problems
    return _fhirkit_problems(resource) + list(_schema_problems(resource, rtype, rtype))


def _fhirkit_problems(resource: Mapping[str, Any]) -> list[str]:
    problems = []
    try:
        data: bytes | dict[str, Any] = orjson.dumps(resource)  # ~2x faster for fhirkit than a dict
    except TypeError:  # e.g. a Decimal value: let fhirkit read the dict itself
        data = dict(resource)
    for issue in fhirkit.validate(data):
        if issue.severity == "error":
            problems.append(f"fhirkit: {issue.path}: {issue.message}")
        else:
            logger.debug("fhirkit %s at %s: %s", issue.severity, issue.path, issue.message)
    return problems


def _schema_problems(resource: Mapping[str, Any], rtype: str, where: str) -> Iterator[str]:
    if rtype == "Bundle":
        yield from _bundle_problems(resource, where)
        return
    for error in _validator(rtype).iter_errors(resource):
        yield from _explain(error, where)


def _bundle_problems(bundle: Mapping[str, Any], where: str) -> Iterator[str]:
    """Check the Bundle without its entries' resources, then each resource by its own type.

    Bundle.entry.resource is a `oneOf` over every resource type in the schema: slow, and its
    errors say only "not valid under any of the given schemas".
    """
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        yield from (p for e in _validator("Bundle").iter_errors(bundle) for p in _explain(e, where))
        return
    shell = dict(bundle)
    shell["entry"] = [_without_resource(e) for e in entries]
    for error in _validator("Bundle").iter_errors(shell):
        yield from _explain(error, where)
    for i, entry in enumerate(entries):
        if isinstance(entry, Mapping) and "resource" in entry:
            inner = entry["resource"]
            path = f"{where}.entry[{i}].resource"
            rtype, problems = _resource_type(inner)
            if rtype is None:
                yield from (f"schema: {path}: {p}" for p in problems)
            else:
                yield from _schema_problems(inner, rtype, path)


def _without_resource(entry: object) -> object:
    if isinstance(entry, Mapping) and "resource" in entry:
        return {k: v for k, v in entry.items() if k != "resource"}
    return entry


def _explain(error: jsonschema.ValidationError, where: str) -> Iterator[str]:
    """One readable line per leaf problem; a `oneOf` over resources reports the matching branch."""
    instance = error.instance
    if error.validator == "oneOf" and isinstance(instance, Mapping) and error.context:
        branch = _definitions().get(str(instance.get("resourceType")))
        # Branches are the linked definition objects themselves: compare by identity.
        index = next((i for i, o in enumerate(error.validator_value) if o is branch), None)
        if index is not None:
            # Sub-error paths are relative to the oneOf's instance: carry the parent path over.
            base = _path(where, error.path)
            for sub in error.context:
                if sub.schema_path and sub.schema_path[0] == index:
                    yield from _explain(sub, base)
            return
    message = error.message
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    # error.path is relative to the instance this error was raised on (the root, or a oneOf's).
    yield f"schema: {_path(where, error.path)}: {message}"


def _path(root: str, parts: Iterable[object]) -> str:
    out = root
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate_r4b_model(resource: Mapping[str, Any]) -> list[str]:
    """Problems found by the fhir.resources R4B (4.3.0) pydantic models; [] if they load it.

    A third, non-independent opinion: R4B matches R4 for the resources this package writes,
    but the models skip required bindings and invariants (see stack-notes).
    """
    # Imported here so that validate_r4 (the run-time check) does not pay for pydantic models.
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    rtype, problems = _resource_type(resource)
    if rtype is None:
        return problems
    try:
        model = get_fhir_model_class(rtype)
    except (KeyError, ValueError):
        return [f"R4B: resourceType {rtype!r} has no R4B model"]
    try:
        model.model_validate(dict(resource))
    except ValidationError as exc:
        return [f"R4B: {_loc(rtype, err['loc'])}: {err['msg']}" for err in exc.errors()]
    return []


def _loc(rtype: str, loc: Sequence[object]) -> str:
    return _path(rtype, (p for p in loc if p != "__root__"))


def validate_many(resources: Iterable[Mapping[str, Any]]) -> dict[int, list[str]]:
    """validate_r4 over many resources: {position: problems} for the invalid ones only."""
    found = {}
    for i, resource in enumerate(resources):
        problems = validate_r4(resource)
        if problems:
            found[i] = problems
    return found
