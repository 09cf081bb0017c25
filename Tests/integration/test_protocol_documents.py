"""The documents in Protocol/ are well-formed and agree with each other.

* every file in Protocol/schemas is a valid JSON Schema draft 2020-12 whose `$ref`s all resolve;
* Protocol/openapi.yaml passes openapi-spec-validator, its file references resolve and its examples match;
* Protocol/asyncapi.yaml is AsyncAPI 3.0.0, its references resolve and its examples match;
* an example of every message kind of the protocol validates, and deliberately wrong ones are refused;
* the JSON examples in Protocol/README.md match the schemas.

No hub process is needed: these tests only read files.
"""
import copy
import json
import os
import re
import urllib.parse

import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi

import protocol_schemas
from protocol_schemas import (
    SchemaValidationError,
    is_valid,
    validate,
    validate_event,
    validate_ws_client_message,
    validate_ws_server_message,
)

PROTOCOL_DIR = os.path.dirname(protocol_schemas.SCHEMA_DIR)
SCHEMA_NAMES = sorted(protocol_schemas.load_schemas())
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

EXPECTED_SCHEMAS = {
    "common", "ingest-event", "ingest-request", "ingest-response", "error-response", "event",
    "ws-client-auth", "ws-client-subscribe", "ws-client-unsubscribe", "ws-client-message",
    "ws-server-event", "ws-server-subscribed", "ws-server-unsubscribed", "ws-server-authenticated",
    "ws-server-replay-truncated", "ws-server-error", "ws-server-heartbeat", "ws-server-token-expiring",
    "ws-server-message", "sse-replay-truncated", "sse-reconnect",
}

TOKEN = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsIndvcmtzcGFjZXMiOlsidzEiXSwiZXhwIjoxNzY0MDcyMDAwfQ"
         ".18hf6ASrSGCYrBhORrT094oWrfXC8PWB_E5WW5UjUS0")


def load_yaml(name):
    with open(os.path.join(PROTOCOL_DIR, name), encoding="utf-8") as f:
        return yaml.safe_load(f)


def walk_refs(node, path="#"):
    """Yields (json pointer of the referring object, $ref value) for every $ref in a document."""
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield path, node["$ref"]
        for key, value in node.items():
            yield from walk_refs(value, f"{path}/{key.replace('~', '~0').replace('/', '~1')}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk_refs(value, f"{path}/{i}")


def resolve_pointer(document, fragment):
    node = document
    for part in [p for p in fragment.lstrip("/").split("/") if p] if fragment else []:
        part = urllib.parse.unquote(part).replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def resolve_document_ref(document, ref):
    """Resolves a $ref of openapi.yaml / asyncapi.yaml: internal ('#/...') or to a schema file ('./schemas/x.json#...').

    Returns (schema name or None, target)."""
    target, _, fragment = ref.partition("#")
    if not target:
        return None, resolve_pointer(document, fragment)
    file_path = os.path.normpath(os.path.join(PROTOCOL_DIR, target))
    assert os.path.isfile(file_path), f"$ref {ref!r} names no file ({file_path})"
    assert os.path.dirname(file_path) == protocol_schemas.SCHEMA_DIR, f"$ref {ref!r} points outside Protocol/schemas"
    name = os.path.basename(file_path)[: -len(".json")]
    return name, resolve_pointer(protocol_schemas.load_schemas()[name], fragment)


# --------------------------------------------------------------------------------------------- schema files

def test_every_expected_schema_file_exists():
    assert EXPECTED_SCHEMAS <= set(SCHEMA_NAMES), f"missing: {sorted(EXPECTED_SCHEMAS - set(SCHEMA_NAMES))}"


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_valid_draft_2020_12(name):
    schema = protocol_schemas.load_schemas()[name]
    assert schema.get("$schema") == DRAFT_2020_12
    assert schema.get("$id") == f"https://hub.invalid/schemas/{name}.json"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_ref_in_schema_resolves_in_the_registry(name):
    schema = protocol_schemas.load_schemas()[name]
    resolver = protocol_schemas.registry().resolver(base_uri=schema["$id"])
    refs = list(walk_refs(schema))
    for where, ref in refs:
        assert not ref.startswith(("http:", "https:")) or ref.startswith("https://hub.invalid/schemas/"), ref
        resolver.lookup(ref)  # raises referencing.exceptions.Unresolvable


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_examples_embedded_in_schema_validate(name):
    for example in protocol_schemas.load_schemas()[name].get("examples", []):
        validate(name, example)


# --------------------------------------------------------------------------------------------- OpenAPI

def test_openapi_passes_openapi_spec_validator():
    path = os.path.join(PROTOCOL_DIR, "openapi.yaml")
    spec = load_yaml("openapi.yaml")
    assert spec["openapi"] == "3.1.0"
    validate_openapi(spec, base_uri="file://" + urllib.parse.quote(path))


def test_openapi_describes_every_endpoint():
    spec = load_yaml("openapi.yaml")
    paths = spec["paths"]
    assert set(paths["/v1/jobs/progress"]["post"]["responses"]) >= {"202", "400", "401", "403", "405", "413", "415", "503"}
    sse = paths["/api/v1/workspaces/{workspace}/executions/{execution}/stream"]["get"]
    assert set(sse["responses"]) >= {"200", "400", "401", "403", "404", "405", "429"}
    assert "text/event-stream" in sse["responses"]["200"]["content"]
    assert {next(iter(req)) for req in sse["security"]} == {"bearerToken", "accessTokenQuery", "hubTokenCookie"}
    assert set(paths["/v1/ws"]["get"]["responses"]) >= {"101", "400", "401", "403", "426"}
    assert "200" in paths["/healthz"]["get"]["responses"]


def test_openapi_refs_resolve():
    spec = load_yaml("openapi.yaml")
    refs = list(walk_refs(spec))
    assert any(ref.startswith("./schemas/") for _, ref in refs)
    for where, ref in refs:
        resolve_document_ref(spec, ref)


def _openapi_media_examples(spec):
    """(where, schema name, example value) for each example of a media type whose schema is a file reference."""
    for where, ref in walk_refs(spec):
        if not ref.startswith("./schemas/") or not where.endswith("/schema"):
            continue
        media = resolve_pointer(spec, where[1:].rsplit("/", 1)[0])
        name, _ = resolve_document_ref(spec, ref)
        if "example" in media:
            yield where, name, media["example"]
        for key, example in media.get("examples", {}).items():
            if "$ref" in example:
                example = resolve_pointer(spec, example["$ref"][1:])
            yield f"{where}/examples/{key}", name, example["value"]


def test_openapi_examples_match_their_schemas():
    spec = load_yaml("openapi.yaml")
    found = list(_openapi_media_examples(spec))
    assert len(found) >= 20
    for where, name, value in found:
        try:
            validate(name, value)
        except SchemaValidationError as e:
            raise AssertionError(f"openapi.yaml {where}:\n{e}") from None


# --------------------------------------------------------------------------------------------- AsyncAPI

def test_asyncapi_is_3_0_0_and_its_refs_resolve():
    doc = load_yaml("asyncapi.yaml")
    assert doc["asyncapi"] == "3.0.0"
    file_refs = set()
    for where, ref in walk_refs(doc):
        name, target = resolve_document_ref(doc, ref)
        if name is not None:
            file_refs.add(name)
            assert "$schema" in target, f"{where}: {ref} is not a schema"
    expected = {n for n in EXPECTED_SCHEMAS if n.startswith(("ws-client-", "ws-server-", "sse-"))
                and n not in ("ws-client-message", "ws-server-message")} | {"event"}
    assert expected <= file_refs, f"not referenced: {sorted(expected - file_refs)}"


def test_asyncapi_channels_and_operations():
    doc = load_yaml("asyncapi.yaml")
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {"/v1/ws", "/api/v1/workspaces/{workspace}/executions/{execution}/stream"}
    actions = {op["action"] for op in doc["operations"].values()}
    assert actions == {"send", "receive"}
    for name, op in doc["operations"].items():
        channel = resolve_pointer(doc, op["channel"]["$ref"][1:])
        for message_ref in op["messages"]:
            assert message_ref["$ref"].startswith(op["channel"]["$ref"] + "/messages/"), name
            resolve_pointer(doc, message_ref["$ref"][1:])
        assert channel["messages"]


def test_asyncapi_message_examples_match_their_payloads():
    doc = load_yaml("asyncapi.yaml")
    count = 0
    for key, message in doc["components"]["messages"].items():
        name, _ = resolve_document_ref(doc, message["payload"]["schema"]["$ref"])
        assert message["examples"], key
        for example in message["examples"]:
            validate(name, example["payload"])
            count += 1
    assert count >= 14


# --------------------------------------------------------------------------------------------- valid messages

INGEST_EXAMPLES = {
    "execution.started": {"event": "execution.started", "execution_id": "e9", "workspace_id": "w1",
                          "timestamp": "2026-11-25T12:00:00.000Z",
                          "data": {"workflow": "nightly-etl",
                                   "nodes": [{"key": "fetch"}, {"key": "load", "depends_on": ["fetch"]}]}},
    "node.started": {"event": "node.started", "execution_id": "e9", "workspace_id": "w1", "node_key": "fetch",
                     "data": {"attempt": 1}},
    "node.completed": {"event": "node.completed", "execution_id": "e9", "workspace_id": "w1", "node_key": "fetch",
                       "timestamp": "2026-11-25T12:00:01.570+01:00", "idempotency_key": "e9-fetch-done",
                       "data": {"duration_ms": 1520, "status": "completed", "output": {"rows": 42, "files": [1, None]}}},
    "node.failed": {"event": "node.failed", "execution_id": "e9", "workspace_id": "w1", "node_key": "load",
                    "data": {"error": {"message": "connection refused", "code": "ECONNREFUSED"}, "duration_ms": 30012}},
    "node.log": {"event": "node.log", "execution_id": "e9", "workspace_id": "w1", "node_key": "etl/load:2",
                 "data": {"level": "warning", "message": "slow mirror, retrying"}},
    "execution.completed": {"event": "execution.completed", "execution_id": "e9", "workspace_id": "w1",
                            "data": {"total_duration_ms": 4210, "node_count": 2}},
    "execution.failed": {"event": "execution.failed", "execution_id": "e9", "workspace_id": "w1",
                         "data": {"error": "node load failed", "total_duration_ms": 31570, "failed_node": "load"}},
}

DELIVERED_EXAMPLES = {
    "execution.started": {"execution": "e9", "workspace": "w1", "seq": 1, "event": "execution.started",
                          "timestamp": "2026-11-25T12:00:00.000Z",
                          "data": {"status": "running", "workflow": "nightly-etl",
                                   "nodes": [{"key": "fetch", "depends_on": []},
                                             {"key": "load", "depends_on": ["fetch"]}]}},
    "node.started": {"execution": "e9", "workspace": "w1", "seq": 2, "event": "node.started", "node_key": "fetch",
                     "timestamp": "2026-11-25T12:00:00.050Z", "data": {"status": "running", "attempt": 1}},
    "node.completed": {"execution": "e9", "workspace": "w1", "seq": 4, "event": "node.completed", "node_key": "fetch",
                       "timestamp": "2026-11-25T12:00:01.570Z",
                       "data": {"status": "completed", "duration_ms": 1520, "output_keys": ["rows", "files"],
                                "output_size_bytes": 21, "output_preview": "{\"rows\":42,\"files\":3}"}},
    "node.failed": {"execution": "e9", "workspace": "w1", "seq": 5, "event": "node.failed", "node_key": "load",
                    "timestamp": "2026-11-25T12:00:31.600Z",
                    "data": {"status": "failed", "error": {"message": "connection refused", "code": "ECONNREFUSED"},
                             "duration_ms": 30012}},
    "node.log": {"execution": "e9", "workspace": "w1", "seq": 3, "event": "node.log", "node_key": "fetch",
                 "timestamp": "2026-11-25T12:00:00.700Z", "data": {"level": "info", "message": "downloading 3 files"}},
    "execution.completed": {"execution": "e9", "workspace": "w1", "seq": 6, "event": "execution.completed",
                            "timestamp": "2026-11-25T12:00:04.210Z",
                            "data": {"status": "completed", "total_duration_ms": 4210, "node_count": 2}},
    "execution.failed": {"execution": "e9", "workspace": "w1", "seq": 6, "event": "execution.failed",
                         "timestamp": "2026-11-25T12:00:31.610Z",
                         "data": {"status": "failed", "error": {"message": "node load failed"},
                                  "total_duration_ms": 31570, "failed_node": "load"}},
}

VALID = [
    # ingestion
    *[("ingest-event", e) for e in INGEST_EXAMPLES.values()],
    *[("ingest-request", e) for e in INGEST_EXAMPLES.values()],
    ("ingest-request", {"events": list(INGEST_EXAMPLES.values())}),
    ("ingest-request", {"events": [INGEST_EXAMPLES["node.log"]] * 500}),
    ("ingest-event", {"event": "execution.started", "execution_id": "e9", "workspace_id": "w1"}),
    ("ingest-event", {"event": "node.completed", "execution_id": "e9", "workspace_id": "w1", "node_key": "f",
                      "data": {"duration_ms": 0, "status": "skipped"}}),
    ("ingest-event", {"event": "node.failed", "execution_id": "e9", "workspace_id": "w1", "node_key": "f",
                      "data": {"error": "boom"}}),
    ("ingest-event", {"event": "node.log", "execution_id": "e9", "workspace_id": "w1", "node_key": "f",
                      "data": {"message": ""}}),
    ("ingest-response", {"accepted": [{"execution_id": "e-123", "workspace_id": "w1", "seq": 42, "duplicate": False},
                                      {"execution_id": "e-123", "workspace_id": "w1", "seq": 17, "duplicate": True}]}),
    ("error-response", {"error": "invalid_event", "message": "is required", "field": "events[2].data.duration_ms"}),
    ("error-response", {"error": "invalid_json", "message": "the body is not valid JSON"}),
    ("error-response", {"error": "too_many_streams", "message": "workspace w1 already has 5 open streams"}),
    ("error-response", {"error": "not_found", "message": "no route for /path"}),
    # delivered events
    *[("event", e) for e in DELIVERED_EXAMPLES.values()],
    ("event", {"execution": "e9", "workspace": "w1", "seq": 7, "event": "node.started", "node_key": "x",
               "timestamp": "2026-11-25T12:00:00Z", "data": {"status": "running"}}),
    ("event", {"execution": "e9", "workspace": "w1", "seq": 8, "event": "node.completed", "node_key": "x",
               "timestamp": "2026-11-25T12:00:00Z",
               "data": {"status": "skipped", "duration_ms": 0, "output_keys": [], "output_size_bytes": 4,
                        "output_preview": "null"}}),
    # WebSocket, client -> hub
    ("ws-client-auth", {"op": "auth", "id": 1, "token": TOKEN}),
    ("ws-client-auth", {"op": "auth", "token": TOKEN}),
    ("ws-client-subscribe", {"op": "subscribe", "id": 2, "workspace": "w1", "execution": "e9", "since": 41}),
    ("ws-client-subscribe", {"op": "subscribe", "workspace": "w1", "execution": "e9"}),
    ("ws-client-subscribe", {"op": "subscribe", "workspace": "w1", "execution": "e9", "since": 0}),
    ("ws-client-unsubscribe", {"op": "unsubscribe", "id": 3, "workspace": "w1", "execution": "e9"}),
    # WebSocket, hub -> client
    *[("ws-server-event", {"type": "event", **e}) for e in DELIVERED_EXAMPLES.values()],
    ("ws-server-subscribed", {"type": "subscribed", "id": 2, "workspace": "w1", "execution": "e9", "seq": 57}),
    ("ws-server-subscribed", {"type": "subscribed", "workspace": "w1", "execution": "e9", "seq": 0}),
    ("ws-server-unsubscribed", {"type": "unsubscribed", "id": 3, "workspace": "w1", "execution": "e9"}),
    ("ws-server-unsubscribed", {"type": "unsubscribed", "workspace": "w1", "execution": "e9", "reason": "forbidden"}),
    ("ws-server-authenticated", {"type": "authenticated", "id": 1, "sub": "alice", "workspaces": ["w1"],
                                 "expires_at": 1764072000}),
    ("ws-server-replay-truncated", {"type": "replay.truncated", "workspace": "w1", "execution": "e9", "since": 41,
                                    "first_seq": 50}),
    *[("ws-server-error", {"type": "error", "id": 2, "code": code, "message": "refused"}) for code in [
        "invalid_message", "unknown_op", "unauthenticated", "invalid_token", "token_expired", "unsupported_alg",
        "forbidden", "too_many_subscriptions", "already_subscribed", "not_subscribed"]],
    ("ws-server-error", {"type": "error", "code": "invalid_message", "message": "not JSON"}),
    ("ws-server-heartbeat", {"type": "heartbeat"}),
    ("ws-server-token-expiring", {"type": "token.expiring", "expires_at": 1764072000}),
    # SSE data
    ("sse-replay-truncated", {"workspace": "w1", "execution": "e9", "since": 41, "first_seq": 50}),
    ("sse-reconnect", {"reason": "max_connection_age", "last_event_id": 42}),
]


@pytest.mark.parametrize("schema_name,instance", VALID, ids=[f"{n}-{i}" for i, (n, _) in enumerate(VALID)])
def test_valid_message(schema_name, instance):
    validate(schema_name, instance)
    if schema_name.startswith("ws-client-"):
        validate_ws_client_message(instance)
    elif schema_name.startswith("ws-server-"):
        validate_ws_server_message(instance)
    elif schema_name == "event":
        validate_event(instance)


def test_every_event_type_has_an_ingestion_and_a_delivered_example():
    types = set(protocol_schemas.load_schemas()["common"]["$defs"]["eventType"]["enum"])
    assert set(INGEST_EXAMPLES) == types
    assert set(DELIVERED_EXAMPLES) == types
    for t in types:
        assert INGEST_EXAMPLES[t]["event"] == t and DELIVERED_EXAMPLES[t]["event"] == t


def test_every_ws_server_message_type_is_covered():
    types = {inst["type"] for name, inst in VALID if name.startswith("ws-server-")}
    assert types == {"event", "subscribed", "unsubscribed", "authenticated", "replay.truncated", "error",
                     "heartbeat", "token.expiring"}


# --------------------------------------------------------------------------------------------- invalid messages

def with_changes(base, **changes):
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is DELETE:
            del out[key]
        else:
            out[key] = value
    return out


DELETE = object()
ING = INGEST_EXAMPLES
DEL = DELIVERED_EXAMPLES

INVALID = [
    # unknown fields
    ("ingest-event", "unknown top-level field", with_changes(ING["node.started"], priority=1)),
    ("ingest-event", "unknown data field", with_changes(ING["node.started"], data={"attempt": 1, "retries": 2})),
    ("ingest-event", "unknown field in error object",
     with_changes(ING["node.failed"], data={"error": {"message": "x", "stack": "..."}})),
    ("ingest-request", "unknown field next to events", {"events": [ING["node.log"]], "extra": True}),
    ("event", "unknown field in delivered event", with_changes(DEL["node.log"], idempotency_key="k")),
    ("ws-server-event", "unknown field in event message", {"type": "event", **DEL["node.log"], "extra": 1}),
    ("ws-server-subscribed", "unknown field", {"type": "subscribed", "workspace": "w1", "execution": "e9", "seq": 1,
                                               "since": 0}),
    ("ws-server-heartbeat", "unknown field", {"type": "heartbeat", "at": 1}),
    ("ingest-response", "unknown field", {"accepted": [{"execution_id": "e", "workspace_id": "w", "seq": 1,
                                                        "duplicate": False, "extra": 0}]}),
    # required data fields per type
    ("ingest-event", "node.completed without duration_ms",
     with_changes(ING["node.completed"], data={"status": "completed"})),
    ("ingest-event", "node.completed without data", with_changes(ING["node.completed"], data=DELETE)),
    ("ingest-event", "node.failed without error", with_changes(ING["node.failed"], data={"duration_ms": 1})),
    ("ingest-event", "node.log without message", with_changes(ING["node.log"], data={"level": "info"})),
    ("ingest-event", "execution.completed without node_count",
     with_changes(ING["execution.completed"], data={"total_duration_ms": 1})),
    ("event", "delivered node.completed without duration_ms",
     with_changes(DEL["node.completed"], data={"status": "completed"})),
    ("event", "delivered node.completed with a partial output summary",
     with_changes(DEL["node.completed"], data={"status": "completed", "duration_ms": 1, "output_keys": []})),
    # node_key presence
    ("ingest-event", "node_key on an execution event", with_changes(ING["execution.completed"], node_key="fetch")),
    ("ingest-event", "node event without node_key", with_changes(ING["node.log"], node_key=DELETE)),
    ("event", "node_key on a delivered execution event", with_changes(DEL["execution.started"], node_key="fetch")),
    ("event", "delivered node event without node_key", with_changes(DEL["node.started"], node_key=DELETE)),
    ("ws-server-event", "node_key on an execution event message",
     {"type": "event", **with_changes(DEL["execution.completed"], node_key="x")}),
    # types and values
    ("event", "seq is a string", with_changes(DEL["node.log"], seq="42")),
    ("event", "seq is 0", with_changes(DEL["node.log"], seq=0)),
    ("ws-server-event", "seq is a float", {"type": "event", **with_changes(DEL["node.log"], seq=4.5)}),
    ("ws-server-subscribed", "seq is a string", {"type": "subscribed", "workspace": "w1", "execution": "e9",
                                                 "seq": "57"}),
    ("ingest-response", "seq is a string", {"accepted": [{"execution_id": "e", "workspace_id": "w", "seq": "1",
                                                          "duplicate": False}]}),
    ("ingest-event", "unknown event type", with_changes(ING["node.log"], event="node.done")),
    ("ingest-event", "bad identifier", with_changes(ING["node.log"], execution_id="-e9")),
    ("ingest-event", "identifier too long", with_changes(ING["node.log"], workspace_id="w" * 129)),
    ("ingest-event", "slash in identifier", with_changes(ING["node.log"], workspace_id="a/b")),
    ("ingest-event", "bad timestamp", with_changes(ING["node.log"], timestamp="2026-11-25 12:00:00")),
    ("ingest-event", "idempotency_key with a space", with_changes(ING["node.log"], idempotency_key="a b")),
    ("ingest-event", "idempotency_key too long", with_changes(ING["node.log"], idempotency_key="k" * 129)),
    ("ingest-event", "attempt 0", with_changes(ING["node.started"], data={"attempt": 0})),
    ("ingest-event", "negative duration", with_changes(ING["node.completed"], data={"duration_ms": -1})),
    ("ingest-event", "bad status", with_changes(ING["node.completed"], data={"duration_ms": 1, "status": "done"})),
    ("ingest-event", "bad level", with_changes(ING["node.log"], data={"message": "m", "level": "fatal"})),
    ("ingest-event", "empty error string", with_changes(ING["node.failed"], data={"error": ""})),
    ("ingest-event", "log message too long", with_changes(ING["node.log"], data={"message": "x" * 8193})),
    ("ingest-event", "501 nodes", with_changes(ING["execution.started"],
                                              data={"nodes": [{"key": f"n{i}"} for i in range(501)]})),
    ("ingest-request", "empty batch", {"events": []}),
    ("ingest-request", "501 events", {"events": [ING["node.log"]] * 501}),
    ("ingest-request", "not an object", [ING["node.log"]]),
    ("error-response", "invalid_event without field", {"error": "invalid_event", "message": "bad"}),
    ("error-response", "field on another error", {"error": "bad_signature", "message": "bad", "field": "event"}),
    ("error-response", "unknown code", {"error": "teapot", "message": "bad"}),
    ("event", "delivered error as a string", with_changes(DEL["node.failed"], data={"status": "failed",
                                                                                     "error": "boom"})),
    ("event", "delivered node.started with wrong status", with_changes(DEL["node.started"],
                                                                      data={"status": "completed"})),
    # WebSocket client ops
    ("ws-client-message", "unknown op", {"op": "publish", "workspace": "w1", "execution": "e9"}),
    ("ws-client-message", "no op", {"workspace": "w1", "execution": "e9"}),
    ("ws-client-message", "auth without token", {"op": "auth", "id": 1}),
    ("ws-client-message", "subscribe without execution", {"op": "subscribe", "workspace": "w1"}),
    ("ws-client-message", "negative since", {"op": "subscribe", "workspace": "w1", "execution": "e9", "since": -1}),
    ("ws-client-message", "string id", {"op": "unsubscribe", "id": "3", "workspace": "w1", "execution": "e9"}),
    # WebSocket server messages
    ("ws-server-message", "unknown type", {"type": "pong"}),
    ("ws-server-message", "unknown error code", {"type": "error", "code": "oops", "message": "m"}),
    ("ws-server-message", "unsubscribed with unknown reason",
     {"type": "unsubscribed", "workspace": "w1", "execution": "e9", "reason": "expired"}),
    ("ws-server-message", "replay.truncated without first_seq",
     {"type": "replay.truncated", "workspace": "w1", "execution": "e9", "since": 41}),
    ("ws-server-message", "token.expiring with a string time", {"type": "token.expiring", "expires_at": "soon"}),
    # SSE data
    ("sse-reconnect", "other reason", {"reason": "shutdown", "last_event_id": 42}),
    ("sse-reconnect", "missing last_event_id", {"reason": "max_connection_age"}),
    ("sse-replay-truncated", "with a type", {"type": "replay.truncated", "workspace": "w1", "execution": "e9",
                                             "since": 41, "first_seq": 50}),
]


@pytest.mark.parametrize("schema_name,why,instance", INVALID, ids=[f"{n}: {w}" for n, w, _ in INVALID])
def test_invalid_message_is_refused(schema_name, why, instance):
    assert not is_valid(schema_name, instance), why
    with pytest.raises(SchemaValidationError) as raised:
        validate(schema_name, instance)
    assert f"{schema_name}.json" in str(raised.value)


def test_failure_message_names_the_field():
    with pytest.raises(SchemaValidationError) as raised:
        validate_event(with_changes(DEL["node.log"], seq="42"))
    assert "$.seq" in str(raised.value)
    with pytest.raises(SchemaValidationError) as raised:
        validate("ingest-event", with_changes(ING["node.completed"], data={"status": "completed"}))
    assert "'duration_ms' is a required property" in str(raised.value)
    with pytest.raises(SchemaValidationError) as raised:
        validate_ws_server_message({"type": "subscribed", "workspace": "w1", "execution": "e9", "seq": "57"})
    assert "$.seq" in str(raised.value) and "heartbeat" not in str(raised.value)


def test_unknown_schema_name_is_reported():
    with pytest.raises(KeyError, match="no schema"):
        validate("no-such-schema", {})


# --------------------------------------------------------------------------------------------- README

def _classify(obj):
    """The schema a JSON example of the README belongs to, or None."""
    if not isinstance(obj, dict):
        return None
    if "op" in obj:
        return "ws-client-message"
    if "type" in obj:
        return "ws-server-message"
    if "execution_id" in obj and "workspace_id" not in obj and "events" not in obj:
        return "redis-seed-message"
    if "events" in obj or "execution_id" in obj:
        return "ingest-request"
    if "accepted" in obj:
        return "ingest-response"
    if "error" in obj and "message" in obj:
        return "error-response"
    if "seq" in obj and "execution" in obj:
        return "event"
    if "first_seq" in obj:
        return "sse-replay-truncated"
    if obj.get("reason") == "max_connection_age":
        return "sse-reconnect"
    return None


def _readme_json_examples():
    with open(os.path.join(PROTOCOL_DIR, "README.md"), encoding="utf-8") as f:
        text = f.read()
    candidates = []
    in_block = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            line = re.sub(r"^(data: |→ |← )", "", line.strip())
            if line.startswith("{"):
                candidates.append(line)
        else:
            candidates.extend(re.findall(r"`(\{[^`]*\})`", line))
    for candidate in candidates:
        if re.search(r'"<[^"]*>"', candidate):
            continue  # a schematic example with placeholders such as "<code>"
        try:
            obj = json.loads(candidate)
        except ValueError:
            continue  # a schematic example with placeholders such as …
        name = _classify(obj)
        if name:
            yield candidate, name, obj


def test_readme_json_examples_match_the_schemas():
    found = list(_readme_json_examples())
    assert len(found) >= 40, len(found)
    kinds = {name for _, name, _ in found}
    assert kinds >= {"ws-client-message", "ws-server-message", "ingest-request", "ingest-response",
                     "error-response", "event", "sse-replay-truncated", "sse-reconnect"}
    for text, name, obj in found:
        try:
            validate(name, obj)
        except SchemaValidationError as e:
            raise AssertionError(f"README example {text}\n{e}") from None
