"""Request types declared once, as dataclasses whose fields carry a `Kind`: the same declaration parses a
request (every field checked, unknown fields refused, errors naming the field) and writes its JSON Schema
for /openapi.json. HTTP-free.

    @dataclass(frozen=True)
    class RerankRequest:
        query: str = field_of(STRING, "the query")
        top_n: int | None = field_of(optional(POSITIVE_INT), "how many results", default=None)
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING


class Refused(Exception):
    """A request refused with an HTTP status and a one-line message (`param` names the field at fault)."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.param, self.headers = status, param, headers or {}


def short(value) -> str:
    """At most 40 characters of what a client sent, for an error message."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


class Kind:
    """What one field accepts: `check(value, name, limits)` returns the value to use or raises Refused;
    `schema` is its JSON Schema."""

    def __init__(self, schema: dict, check):
        self.schema, self.check = schema, check


def simple(schema: dict, test, what: str) -> Kind:
    """A kind whose values pass `test(value)` and are used as sent; others are a 400 saying `what`."""

    def check(value, name, limits):
        if not test(value):
            raise Refused(400, f"{name} must be {what}, got {short(value)}", name)
        return value

    return Kind(schema, check)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


BOOL = simple({"type": "boolean"}, lambda v: isinstance(v, bool), "true or false")
STRING = simple({"type": "string"}, lambda v: isinstance(v, str), "a string")
POSITIVE_INT = simple({"type": "integer", "minimum": 1}, lambda v: _is_int(v) and v >= 1, "a positive integer")


def choice(*values: str) -> Kind:
    """One of `values`, in any letter case (TEI's clients send Right and right); the lower-case one is used."""
    plain = simple(
        {"type": "string", "enum": list(values)},
        lambda v: isinstance(v, str) and v.lower() in values,
        "one of " + ", ".join(values),
    )
    return Kind(plain.schema, lambda value, name, limits: plain.check(value, name, limits).lower())


def optional(kind: Kind) -> Kind:
    """`kind` or null."""
    return Kind(
        {**kind.schema, "nullable": True},
        lambda value, name, limits: None if value is None else kind.check(value, name, limits),
    )


def nested(cls) -> Kind:
    """An object parsed as the request type `cls`."""
    return Kind(object_schema(cls), lambda value, name, limits: parse(cls, value, limits, where=name))


def field_of(kind: Kind, doc: str, default=MISSING):
    """A request field: its kind, a line saying what it is, and its default (none: required)."""
    return dataclasses.field(default=default, metadata={"kind": kind, "doc": doc})


def parse(cls, body, limits, where: str = "the body"):
    """`body` (parsed JSON) as an instance of the request type `cls`: a JSON object, its required fields
    present, no field `cls` does not declare, each field's value checked by its kind."""
    fields = dataclasses.fields(cls)
    required = [f.name for f in fields if f.default is MISSING]
    if not isinstance(body, dict):
        raise Refused(
            400, f"{where} must be a JSON object with {', '.join(required) or 'fields'}, got {type(body).__name__}"
        )
    for name in required:
        if name not in body:
            raise Refused(400, f"{name} is missing", name)
    allowed = {f.name for f in fields}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Refused(
            400, f"unknown field {short(unknown[0])}; this route takes {', '.join(sorted(allowed))}", unknown[0]
        )
    values = {}
    for f in fields:
        if f.name in body:
            values[f.name] = f.metadata["kind"].check(body[f.name], f.name, limits)
    return cls(**values)


def object_schema(cls) -> dict:
    """The JSON Schema of the request type `cls`, from its fields' kinds, docs and defaults."""
    properties, required = {}, []
    for f in dataclasses.fields(cls):
        prop = {**f.metadata["kind"].schema, "description": f.metadata["doc"]}
        if f.default is MISSING:
            required.append(f.name)
        else:
            prop["default"] = f.default
        properties[f.name] = prop
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if cls.__doc__:
        schema["description"] = " ".join(cls.__doc__.split())
    if required:
        schema["required"] = required
    return schema


def openapi(title: str, version: str, routes: list) -> dict:
    """An OpenAPI 3.0 document for `routes`: (path, method, summary, request type or None), each request
    body's schema written from its type."""
    paths, schemas = {}, {}
    for path, method, summary, request in routes:
        operation = {"summary": summary, "responses": {"200": {"description": "OK"}}}
        if request is not None:
            schemas[request.__name__] = object_schema(request)
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request.__name__}"}}},
            }
            operation["responses"].update(
                {
                    "400": {"description": "a field is missing, unknown or of the wrong kind"},
                    "404": {"description": "the model named is not served here"},
                    "413": {"description": "over a size limit"},
                    "422": {"description": "an input too long with truncate false"},
                    "429": {"description": "over the server's concurrency or queue limit"},
                }
            )
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    }
