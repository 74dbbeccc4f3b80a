"""Validation against the CRD's structural OpenAPI schema, as the API server does it.

Written here rather than taken from a JSON Schema library so that `djangoscale render` runs
from the base install, and because a CRD's schema is not plain JSON Schema: a field that the
schema does not declare is an error (the API server's strict field validation, which `kubectl
apply` uses), except below `x-kubernetes-preserve-unknown-fields`; `x-kubernetes-int-or-string`
takes either type. Messages use the API server's words and name the field's path.

Pure: the schema and the value come in, one line per problem goes out.
"""

from __future__ import annotations

import re
from typing import Any

Path = tuple[str | int, ...]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def field_path(root: str, path: Path) -> str:
    """`spec.workers[0].name` from ("workers", 0, "name")."""
    text = root
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _has_type(value: Any, schema: dict[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    expected = schema.get("type")
    if expected is None:
        return True
    if isinstance(value, bool) and expected in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[expected])


def _type_name(schema: dict[str, Any]) -> str:
    return "integer or string" if schema.get("x-kubernetes-int-or-string") else schema["type"]


def problems(value: Any, schema: dict[str, Any], path: Path = ()) -> list[tuple[Path, str]]:
    """(path, message) for every way `value` breaks `schema`, in document order."""
    found: list[tuple[Path, str]] = []
    if not _has_type(value, schema):
        return [(path, f"must be of type {_type_name(schema)}")]
    if "enum" in schema and value not in schema["enum"]:
        found.append((path, "must be one of " + ", ".join(str(v) for v in schema["enum"])))
    if isinstance(value, str):
        found += _string_problems(value, schema, path)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            found.append((path, f"must be >= {schema['minimum']}"))
        if "maximum" in schema and value > schema["maximum"]:
            found.append((path, f"must be <= {schema['maximum']}"))
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            found.append((path, f"must have at most {schema['maxItems']} items"))
        if "minItems" in schema and len(value) < schema["minItems"]:
            found.append((path, f"must have at least {schema['minItems']} items"))
        for index, item in enumerate(value):
            found += problems(item, schema.get("items", {}), (*path, index))
            if schema.get("x-kubernetes-list-type") == "set" and item in value[:index]:
                found.append(((*path, index), f"duplicate value {item!r} (the list is a set)"))
    elif isinstance(value, dict):
        found += _object_problems(value, schema, path)
    return found


def _string_problems(value: str, schema: dict[str, Any], path: Path) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        found.append((path, f"must be at least {schema['minLength']} characters"))
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        found.append((path, f"must be at most {schema['maxLength']} characters"))
    if "pattern" in schema and not re.search(schema["pattern"], value):
        found.append((path, f"must match {schema['pattern']}"))
    return found


def _object_problems(
    value: dict[str, Any], schema: dict[str, Any], path: Path
) -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        found.append((path, f"must have at most {schema['maxProperties']} entries"))
    found += [((*path, key), "required") for key in schema.get("required", ())
              if key not in value]
    declared: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    open_ended = schema.get("x-kubernetes-preserve-unknown-fields") or (
        schema.get("type") == "object" and not declared and extra is None)
    for key, item in value.items():
        if key in declared:
            found += problems(item, declared[key], (*path, key))
        elif isinstance(extra, dict):
            found += problems(item, extra, (*path, key))
        elif not open_ended:
            found.append(((*path, key), "unknown field (not declared in the schema)"))
    return found
