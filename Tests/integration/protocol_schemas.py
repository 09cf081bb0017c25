"""Validation of hub messages against the JSON Schemas in Protocol/schemas (draft 2020-12).

Every file of the folder is loaded into one `referencing.Registry` under its `$id`, so the `$ref`s between files
resolve without any network access:

    from protocol_schemas import validate, validate_ws_server_message
    validate("ingest-request", body)          # schema name with or without ".json"
    validate_ws_server_message(json.loads(frame))

A failure raises `SchemaValidationError` (a subclass of AssertionError, so pytest reports it as a failed
assertion) naming the schema, the path of the offending value and every error found.
"""
import functools
import json
import os

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Protocol", "schemas"))
BASE_URI = "https://hub.invalid/schemas/"


class SchemaValidationError(AssertionError):
    """An instance does not match a protocol schema."""

    def __init__(self, schema_name, instance, errors):
        self.schema_name = schema_name
        self.instance = instance
        self.errors = errors
        lines = [f"{_describe(instance)} does not match schema {schema_name}.json:"]
        for error in errors:
            where = error.json_path if error.absolute_path else "$"
            lines.append(f"  at {where}: {error.message} (schema rule {'/'.join(map(str, error.absolute_schema_path))})")
        super().__init__("\n".join(lines))


def _describe(instance):
    text = json.dumps(instance, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= 300 else text[:300] + "..."


@functools.lru_cache(maxsize=None)
def load_schemas():
    """{file name without .json: schema} for every *.json file in Protocol/schemas."""
    schemas = {}
    for file_name in sorted(os.listdir(SCHEMA_DIR)):
        if file_name.endswith(".json"):
            with open(os.path.join(SCHEMA_DIR, file_name), encoding="utf-8") as f:
                schemas[file_name[: -len(".json")]] = json.load(f)
    if not schemas:
        raise RuntimeError(f"no schema files in {SCHEMA_DIR}")
    return schemas


@functools.lru_cache(maxsize=None)
def registry():
    """A registry holding every schema file under its `$id` (and, for files without one, under BASE_URI + name)."""
    resources = []
    for name, schema in load_schemas().items():
        uri = schema.get("$id", BASE_URI + name + ".json")
        resources.append((uri, Resource.from_contents(schema, default_specification=DRAFT202012)))
    return Registry().with_resources(resources)


@functools.lru_cache(maxsize=None)
def validator(schema_name):
    name = schema_name[: -len(".json")] if schema_name.endswith(".json") else schema_name
    schemas = load_schemas()
    if name not in schemas:
        raise KeyError(f"no schema {name!r} in {SCHEMA_DIR}; known: {', '.join(sorted(schemas))}")
    return Draft202012Validator(
        schemas[name], registry=registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def errors(schema_name, instance):
    """Every validation error of `instance` against `schema_name`, most specific first."""
    v = validator(schema_name)
    return sorted(v.iter_errors(instance), key=lambda e: (list(e.absolute_path), -len(e.absolute_schema_path)))


def is_valid(schema_name, instance):
    return validator(schema_name).is_valid(instance)


def validate(schema_name, instance):
    """Raises SchemaValidationError unless `instance` matches Protocol/schemas/<schema_name>.json."""
    found = errors(schema_name, instance)
    if found:
        name = schema_name[: -len(".json")] if schema_name.endswith(".json") else schema_name
        raise SchemaValidationError(name, instance, _leaves(found))
    return instance


def _leaves(errs):
    """For oneOf/anyOf failures, also list the errors of the alternatives that could have been meant.

    An alternative whose discriminator (`type` of a server message, `op` of a client op) does not match is left
    out, so a bad `subscribed` message is reported against ws-server-subscribed.json only."""
    out = []
    for e in errs:
        out.append(e)
        by_branch = {}
        for sub in e.context or []:
            by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)
        meant = {
            branch: subs for branch, subs in by_branch.items()
            if not any(s.validator == "const" and list(s.relative_path) in (["type"], ["op"]) for s in subs)
        }
        for branch in sorted(meant or by_branch, key=str):
            out.extend((meant or by_branch)[branch])
    return out


def validate_ws_server_message(obj):
    """A message the hub sends on /v1/ws."""
    return validate("ws-server-message", obj)


def validate_ws_client_message(obj):
    """A message a client sends on /v1/ws."""
    return validate("ws-client-message", obj)


def validate_event(obj):
    """A delivered event (the data: of an ordinary SSE event; a WebSocket event message without its type)."""
    return validate("event", obj)
