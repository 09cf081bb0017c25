"""API fuzzing of a real hub process with schemathesis, against the contract in Protocol/openapi.yaml.

Operations fuzzed: `POST /v1/jobs/progress`, `GET /api/v1/workspaces/{workspace}/executions/{execution}/stream`,
`GET /healthz`, `GET /readyz`, `GET /metrics`. `GET /v1/ws` is left out: its success is a protocol switch (101)
that an HTTP client cannot carry on, and its handshake is covered by test_http_errors.py and the Autobahn suite.

Every case goes through schemathesis's examples, coverage and fuzzing phases, positive and negative data, and is
judged twice:

* by schemathesis's built-in checks against the document (`CHECKS` below): no 5xx, a documented status code, the
  documented content type and headers, the body against the response schema, invalid data refused, a missing
  required header refused, an undocumented method answered 405 with `Allow`, a secured operation refusing a request
  stripped of its credentials;
* by an exact model of the hub (`expect_ingest`, `expect_stream`): the status and error code each request must get,
  computed from the bytes actually sent, the JSON Schemas and the hub's state (the next `seq` of every execution,
  every idempotency key already stored). A 202 must carry exactly the predicted `accepted` list.

Authentication does not stop the fuzzing at the door. Most ingestion bodies are signed over the exact bytes sent
(`X-Hub-Timestamp`, `X-Hub-Signature`); the rest go out with a stale timestamp, the wrong secret, or whatever
headers schemathesis generated (missing, garbled). Most stream requests carry an HS256 token granting the
generated workspace; the rest carry none, a token for another workspace, an expired one or a garbled one.

An SSE response never ends, so the stream operation is called with `stream=True`: the status, the headers and the
first block (`retry: 3000`) are read within a bounded time, the connection is closed, and what was read is
validated. Each closed stream must give its slot back: the next request waits until the hub's gauge of open SSE
streams is 0 again, and the run keeps the default cap of 5 streams per workspace, so a leaked slot shows as a 429
on a workspace the fuzzer reuses (it reuses some hundreds of times).

CI runs 500 fuzzed cases per operation (plus the examples and coverage phases, about 1,700 requests) with a fixed
seed, derandomised, in about half a minute. A deeper run (about 11,000 requests, a few minutes):

    HUB_FUZZ_EXAMPLES=5000 HUB_BIN=$PWD/.build/debug/hub .build/venv/bin/python -m pytest -q -s -p no:cacheprovider \\
        --timeout 3600 Tests/integration/test_api_fuzz.py

(`HUB_FUZZ_SEED` picks another seed; `--broker redis` runs it on Redis, where 409 `execution_conflict` joins the
outcomes.) The regression tests at the top replay, exactly, requests the fuzzer found answered against the contract.
"""
import collections
import base64
import hashlib
import hmac
import json
import os
import re
import time
import urllib.parse
import zlib

import pytest
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.transport import STREAM_CUT_SHORT_ATTRIBUTE
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from conftest import Hub
from hubclient import (ENGINE_SECRET, SECRET_ARGS, TOKEN_SECRET, b64url, exec_event, ingest, log_event, mint, open_live_sse,
                       post_raw, request, scrape, signature, signed_headers, sse_path)
from protocol_schemas import is_valid

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OPENAPI = os.path.join(ROOT, "Protocol", "openapi.yaml")
# Hypothesis keeps caches in ./.hypothesis unless told otherwise: keep them under .build, out of the source tree.
set_hypothesis_home_dir(os.path.join(ROOT, ".build", "hypothesis"))
EXAMPLES = int(os.environ.get("HUB_FUZZ_EXAMPLES", "500"))
SEED = int(os.environ.get("HUB_FUZZ_SEED", "20261125"))
MAX_INGEST_BYTES = 1048576
CLOCK_SKEW = 300
ALLOWED_ORIGIN = "https://app.example.com"
STREAM_READ_TIMEOUT = 5.0

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
    ignored_auth,
]

CONFIG = schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": True, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
})

# What the run did, per operation: filled by the fuzz tests, checked by test_fuzzing_reached_every_outcome.
CASES = collections.Counter()
PHASES = collections.Counter()
OUTCOMES = collections.defaultdict(collections.Counter)
STREAMS_PER_WORKSPACE = collections.Counter()


@pytest.fixture(scope="module")
def fuzz_hub(broker_redis):
    redis_args = ("--redis", broker_redis.url, "--redis-prefix", "fuzz:") if broker_redis is not None else ()
    hub = Hub(*SECRET_ARGS, "--allowed-origin", ALLOWED_ORIGIN, *redis_args)
    hub.model = HubModel(redis=broker_redis is not None)
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_hub):
    schema = schemathesis.openapi.from_path(OPENAPI, config=CONFIG)
    schema.config.update(base_url=f"http://{fuzz_hub.host}:{fuzz_hub.port}", request_timeout=STREAM_READ_TIMEOUT)
    return schema


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        yield session


schema = schemathesis.pytest.from_fixture("api_schema")


# --------------------------------------------------------------------------------------------- regressions
# Requests the fuzzer found answered against the contract, replayed exactly.

def signed_post(hub, body: bytes):
    return post_raw(hub, body, signed_headers(body))


@pytest.mark.parametrize("value", ["9158685656366551", "9007199254740992", "9007199254740993", "1e300"])
def test_integer_beyond_2_pow_53_is_refused_with_the_range(hub_factory, value):
    hub = hub_factory(*SECRET_ARGS)
    body = (b'{"event":"execution.completed","execution_id":"0","workspace_id":"0",'
            b'"data":{"node_count":0,"total_duration_ms":' + value.encode() + b'}}')
    status, _, data = signed_post(hub, body)
    assert (status, json.loads(data)) == (400, {
        "error": "invalid_event", "field": "data.total_duration_ms",
        "message": "data.total_duration_ms must be an integer from 0 to 9007199254740991"})


def test_largest_safe_integer_is_accepted(hub_factory):
    hub = hub_factory(*SECRET_ARGS)
    body = (b'{"event":"node.started","execution_id":"e1","workspace_id":"w1","node_key":"n",'
            b'"data":{"attempt":9007199254740991}}')
    status, _, data = signed_post(hub, body)
    assert (status, json.loads(data)) == (202, {"accepted": [
        {"execution_id": "e1", "workspace_id": "w1", "seq": 1, "duplicate": False}]})


def test_attempt_below_its_minimum_names_the_range(hub_factory):
    hub = hub_factory(*SECRET_ARGS)
    body = b'{"event":"node.started","execution_id":"e1","workspace_id":"w1","node_key":"n","data":{"attempt":0}}'
    status, _, data = signed_post(hub, body)
    assert (status, json.loads(data)) == (400, {
        "error": "invalid_event", "field": "data.attempt",
        "message": "data.attempt must be an integer from 1 to 9007199254740991"})


@pytest.mark.parametrize("timestamp", ["2000-02-31T00:00:00Z", "2001-02-29T00:00:00Z", "2100-02-29T00:00:00Z",
                                       "2016-12-31T23:59:60Z"])
def test_timestamp_of_a_day_that_does_not_exist_is_refused(hub_factory, timestamp):
    hub = hub_factory(*SECRET_ARGS)
    body = ('{"event":"execution.started","execution_id":"0","workspace_id":"0","timestamp":"%s"}' % timestamp).encode()
    status, _, data = signed_post(hub, body)
    assert (status, json.loads(data)) == (400, {
        "error": "invalid_event", "field": "timestamp",
        "message": "timestamp must be an RFC 3339 date-time such as 2026-11-25T12:00:00Z"})


def test_leap_days_are_accepted_and_delivered_as_sent(hub_factory):
    hub = hub_factory(*SECRET_ARGS)
    s = open_live_sse(hub, "w1", "e1", mint(workspaces=["w1"]))
    try:
        for i, timestamp in enumerate(["2000-02-29T00:00:00Z", "2024-02-29T23:59:59.999+05:30"]):
            assert ingest(hub, exec_event("e1", "execution.started", timestamp=timestamp)) == [
                {"execution_id": "e1", "workspace_id": "w1", "seq": i + 1, "duplicate": False}]
            assert s.next_message()["json"]["timestamp"] == timestamp
    finally:
        s.close()


@pytest.mark.parametrize("query, header, message", [
    ("last_event_id=", "42", "last_event_id must be a decimal integer from 0 to 18446744073709551615"),
    ("last_event_id=%2042", None, "last_event_id must be a decimal integer from 0 to 18446744073709551615"),
    ("last_event_id=-1", "3", "last_event_id must be a decimal integer from 0 to 18446744073709551615"),
    ("last_event_id=7", "x", "Last-Event-ID must be a decimal integer from 0 to 18446744073709551615"),
    ("", "18446744073709551616", "Last-Event-ID must be a decimal integer from 0 to 18446744073709551615"),
])
def test_every_resume_point_sent_is_checked(hub_factory, query, header, message):
    hub = hub_factory(*SECRET_ARGS)
    headers = {"Authorization": f"Bearer {mint(workspaces=['w1'])}"}
    if header is not None:
        headers["Last-Event-ID"] = header
    status, _, data = request(hub, "GET", sse_path("w1", "e9", query), headers=headers)
    assert (status, json.loads(data)) == (400, {"error": "invalid_last_event_id", "message": message})


def test_header_resume_point_wins_over_the_query(hub_factory):
    hub = hub_factory(*SECRET_ARGS)
    for i in range(3):
        ingest(hub, log_event("e9", i))
    s = open_live_sse(hub, "w1", "e9", mint(workspaces=["w1"]), query="last_event_id=0", headers={"Last-Event-ID": "2"})
    try:
        assert s.next_message()["json"]["seq"] == 3
    finally:
        s.close()


@pytest.mark.parametrize("path", [
    "/api/v1/workspaces/w%201/executions/e9/stream",
    "/api/v1/workspaces/w1/executions/%C2%84/stream",
    "/api/v1/workspaces/w1/executions//stream",
])
def test_stream_path_without_identifiers_is_404(hub_factory, path):
    hub = hub_factory(*SECRET_ARGS)
    status, _, data = request(hub, "GET", path, headers={"Authorization": f"Bearer {mint(workspaces=['w1'])}"})
    assert (status, json.loads(data)) == (404, {"error": "not_found", "message": f"no route for {path}"})


def test_stream_path_refuses_other_methods_with_allow_get(hub_factory):
    hub = hub_factory(*SECRET_ARGS)
    status, headers, data = request(hub, "DELETE", sse_path("w1", "e9"))
    assert (status, headers["allow"], json.loads(data)) == (
        405, "GET", {"error": "method_not_allowed", "message": "use GET"})


# --------------------------------------------------------------------------------------------- the hub's state

class HubModel:
    """What the hub has stored, as far as the fuzzer's accepted requests tell: the next seq of every execution and
    the seq of every idempotency key. With Redis, also which workspace owns each execution id."""

    def __init__(self, redis):
        self.redis = redis
        self.next_seq = collections.Counter()
        self.keys = {}
        self.owner = {}

    def predict(self, events):
        """The `accepted` list a 202 must carry, or ("conflict", index) when an execution belongs elsewhere."""
        next_seq = collections.Counter()
        keys = {}
        accepted = []
        for i, e in enumerate(events):
            ws, ex = e["workspace_id"], e["execution_id"]
            if self.redis and self.owner.get(ex, ws) != ws:
                return ("conflict", i)
            topic = (ws, ex)
            key = e.get("idempotency_key")
            known = keys.get((topic, key), self.keys.get((topic, key))) if key is not None else None
            if known is not None:
                accepted.append({"execution_id": ex, "workspace_id": ws, "seq": known, "duplicate": True})
                continue
            seq = self.next_seq[topic] + next_seq[topic] + 1
            next_seq[topic] += 1
            if key is not None:
                keys[(topic, key)] = seq
            accepted.append({"execution_id": ex, "workspace_id": ws, "seq": seq, "duplicate": False})
        return accepted

    def commit(self, events, accepted):
        for e, a in zip(events, accepted):
            topic = (e["workspace_id"], e["execution_id"])
            self.owner.setdefault(e["execution_id"], e["workspace_id"])
            if not a["duplicate"]:
                self.next_seq[topic] = a["seq"]
                if "idempotency_key" in e:
                    self.keys[(topic, e["idempotency_key"])] = a["seq"]


# --------------------------------------------------------------------------------------------- helpers

def send(case, http, hub, prepare=None, stream=False):
    """Sends `case` as schemathesis serialises it; `prepare(request)` may change the prepared request (sign it,
    set a token) before it goes out. Returns the response (read in full unless `stream`)."""
    kwargs = case.as_transport_kwargs(base_url=f"http://{hub.host}:{hub.port}")
    request = requests.Request(**{k: kwargs[k] for k in ("method", "url", "headers", "params", "cookies", "json", "data",
                                                         "files") if k in kwargs})
    prepared = http.prepare_request(request)
    if prepare is not None:
        prepare(prepared)
    return http.send(prepared, stream=stream, timeout=STREAM_READ_TIMEOUT, allow_redirects=False)


def body_bytes(prepared):
    body = prepared.body
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else bytes(body)


def media_type(value):
    return value.split(";")[0].strip().lower() if value is not None else None


def error_of(response):
    """The error code of a refusal (None for a 2xx, or for a HEAD request, whose answer has no body)."""
    if response.status_code < 300 or response.request.method == "HEAD":
        return None
    return json.loads(response.content)["error"]


def record(case, outcome, response):
    CASES[case.operation.label] += 1
    PHASES[(case.operation.label, case.meta.phase.name.value if case.meta else "none")] += 1
    OUTCOMES[case.operation.label][(outcome, response.status_code)] += 1


def pick(choices, prepared, salt=b""):
    """A choice that depends only on the request (so a derandomised run makes the same ones every time)."""
    key = salt + prepared.method.encode() + prepared.url.encode() + body_bytes(prepared) + \
        repr(sorted((k, v) for k, v in prepared.headers.items() if k != "X-Schemathesis-TestCaseId")).encode()
    return choices[zlib.crc32(key) % len(choices)]


def negated(case, location):
    """Whether schemathesis made this part of the request invalid on purpose (so it must go out as generated)."""
    meta = case.meta
    if meta is None:
        return False
    component = meta.components.get(location)
    if component is not None and component.mode == GenerationMode.NEGATIVE:
        return True
    return (meta.generation.mode == GenerationMode.NEGATIVE
            and getattr(meta.phase.data, "parameter_location", None) == location)


def reject_constant(name):
    raise ValueError(name)


# --------------------------------------------------------------------------------------------- ingestion

INGEST_VARIANTS = ["signed"] * 6 + ["stale", "wrong_secret", "as_generated"]


def sign(prepared, ts, secret=ENGINE_SECRET):
    body = body_bytes(prepared)
    prepared.headers["X-Hub-Timestamp"] = str(ts)
    prepared.headers["X-Hub-Signature"] = signature(body, ts, secret)


def signature_outcome(headers, body, now):
    """(status, error) the hub's signature check gives these headers, or None when they pass."""
    ts, sig = headers.get("X-Hub-Timestamp"), headers.get("X-Hub-Signature")
    if ts is None or sig is None:
        return 401, "missing_signature"
    if not (len(ts.encode()) <= 12 and ts.isascii() and ts.lstrip("+").isdigit() and ts.count("+") <= 1
            and ts.startswith(("+",) + tuple("0123456789"))):
        return 401, "missing_signature"
    hexpart = sig[7:] if sig.startswith("sha256=") else None
    if hexpart is None or len(hexpart) != 64 or any(c not in "0123456789abcdefABCDEF" for c in hexpart):
        return 401, "missing_signature"
    if abs(now - int(ts)) > CLOCK_SKEW:
        return 401, "stale_timestamp"
    if hexpart.lower() != signature(body, int(ts))[7:]:
        return 403, "bad_signature"
    return None


def node_log_too_long(events):
    return next((i for i, e in enumerate(events) if e.get("event") == "node.log"
                 and len(e["data"]["message"].encode()) > 8192), None)


def expect_ingest(prepared, model, now):
    """(status, error code or None, events) the hub must answer to this exact request."""
    if prepared.method != "POST":
        return 405, "method_not_allowed", None
    if media_type(prepared.headers.get("Content-Type")) != "application/json":
        return 415, "unsupported_media_type", None
    body = body_bytes(prepared)
    if len(body) > MAX_INGEST_BYTES:
        return 413, "payload_too_large", None
    refused = signature_outcome(prepared.headers, body, now)
    if refused is not None:
        return (*refused, None)
    try:
        obj = json.loads(body, parse_constant=reject_constant)
    except (ValueError, UnicodeDecodeError):
        return 400, "invalid_json", None
    if not is_valid("ingest-request", obj):
        return 400, "invalid_event", None
    events = obj["events"] if "events" in obj else [obj]
    if node_log_too_long(events) is not None:
        return 400, "invalid_event", None
    return 202, None, events


@schema.include(operation_id="ingestProgress").parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_ingestion(case, fuzz_hub, http):
    now = int(time.time())

    def prepare(prepared):
        # Signature headers made invalid on purpose go out as generated, unless the body is invalid too: then the
        # request is still one the hub must refuse, and signing it lets the body's checks run.
        headers_only = negated(case, ParameterLocation.HEADER) and not negated(case, ParameterLocation.BODY)
        variant = prepare.variant = "as_generated" if headers_only else pick(INGEST_VARIANTS, prepared)
        if variant == "signed":
            sign(prepared, now)
        elif variant == "stale":
            sign(prepared, now - CLOCK_SKEW - 60)
        elif variant == "wrong_secret":
            sign(prepared, now, secret="another-secret-0123456789abcdef")
        prepare.sent = prepared

    response = send(case, http, fuzz_hub, prepare)
    model = fuzz_hub.model
    status, code, events = expect_ingest(prepare.sent, model, int(time.time()))
    if status == 202:
        predicted = model.predict(events)
        if predicted[0] == "conflict":
            status, code = 409, "execution_conflict"
    record(case, code or "accepted", response)
    case.validate_response(response, checks=CHECKS)

    if prepare.sent.method == "HEAD":
        code = None
    assert (response.status_code, error_of(response)) == (status, code), \
        (prepare.variant, prepare.sent.method, prepare.sent.headers, body_bytes(prepare.sent)[:300], response.content[:300])
    if status == 202:
        assert json.loads(response.content) == {"accepted": predicted}
        model.commit(events, predicted)


# --------------------------------------------------------------------------------------------- SSE

STREAM_VARIANTS = ["bearer", "bearer", "query", "cookie", "none", "other_workspace", "expired", "garbled", "generated"]
ORIGINS = ["as_generated", "allowed", "absent"]
CREDENTIALS = {"Authorization", "access_token", "hub_token"}


def case_key(case, salt=b""):
    """Bytes that depend only on what was generated for the case, credentials aside (for choices that a
    derandomised run repeats, and that the test can recompute after the auth provider ran)."""
    def plain(mapping):
        return sorted((k, repr(v)) for k, v in (mapping or {}).items() if k not in CREDENTIALS)
    return salt + repr((case.method, case.path_parameters, plain(case.query), plain(case.headers))).encode()


def stream_variant(case):
    return STREAM_VARIANTS[zlib.crc32(case_key(case)) % len(STREAM_VARIANTS)]


@schema.auth(refresh_interval=None).apply_to(operation_id="streamExecution")
class WatcherToken:
    """Credentials for a stream request, placed as a real watcher would: a token granting the generated workspace
    as a Bearer header, an `access_token` query parameter or the `hub_token` cookie; or deliberately none, a token
    for another workspace, an expired one, a garbled one. For `generated`, whatever schemathesis generated for the
    three security schemes goes out unchanged (get returns None, so no explicit auth is set). Nothing is cached
    (refresh_interval=None): each case gets its own choice and a token for its own workspace."""

    def get(self, case, context):
        variant = stream_variant(case)
        if variant == "generated":
            return None
        workspace = (case.path_parameters or {}).get("workspace")
        workspace = workspace if isinstance(workspace, str) else "w1"
        if variant == "other_workspace":
            return variant, mint(workspaces=[workspace + "-other"])
        if variant == "expired":
            return variant, mint(workspaces=[workspace], exp=int(time.time()) - 60)
        if variant == "garbled":
            return variant, mint(workspaces=[workspace])[:-4] + "AAAA"
        return variant, mint(workspaces=[workspace])

    def set(self, case, data, context):
        variant, token = data
        if variant == "none":
            return
        if variant == "query":
            case.query = {**(case.query or {}), "access_token": token}
        elif variant == "cookie":
            case.cookies = {**(case.cookies or {}), "hub_token": token}
        else:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


def read_first_block(response):
    """The stream's bytes up to the end of its first block (a blank line), read within STREAM_READ_TIMEOUT. What
    arrived in the same reads (replayed events) is kept up to the last complete block, and validated too."""
    deadline = time.monotonic() + STREAM_READ_TIMEOUT
    data = b""
    while b"\n\n" not in data and time.monotonic() < deadline:
        chunk = response.raw.read1(65536)
        if not chunk:
            break
        data += chunk
    return data[: data.rfind(b"\n\n") + 2] if b"\n\n" in data else data


def wait_for_closed_streams(hub, timeout=10.0):
    """Waits until the hub counts no open SSE stream (the closed one has given back its slot)."""
    deadline = time.monotonic() + timeout
    while True:
        open_streams = scrape(hub).get('hub_open_connections{transport=sse}', 0.0)
        if open_streams == 0:
            return
        assert time.monotonic() < deadline, f"{open_streams} SSE streams still open {timeout} s after their close"


IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def expect_stream(prepared, variant, now):
    """(status, error code) the hub must answer to this exact stream request."""
    length = prepared.headers.get("Content-Length")
    if length is not None and not re.fullmatch(r"[0-9]+", length):
        return 400, "malformed_request"  # refused by the HTTP parser, before any route
    url = urllib.parse.urlsplit(prepared.url)
    parts = url.path.split("/")
    if len(parts) != 8 or not all(IDENTIFIER.fullmatch(p) for p in (parts[4], parts[6])):
        return 404, "not_found"
    if prepared.method != "GET":
        return 405, "method_not_allowed"
    origin = prepared.headers.get("Origin")
    if origin is not None and origin != ALLOWED_ORIGIN:
        return 403, "origin_not_allowed"
    query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
    token = sent_token(prepared, query)
    if token is None:
        return 401, "unauthenticated"
    claims = token_claims(token, now)
    if isinstance(claims, str):
        return 401, claims
    if parts[4] not in claims["workspaces"]:
        return 403, "forbidden"
    header = prepared.headers.get("Last-Event-ID")
    for resume in (query.get("last_event_id"), None if header is None else header.strip(" ")):
        if resume is not None and not (re.fullmatch(r"[0-9]+", resume) and int(resume) < 2 ** 64):
            return 400, "invalid_last_event_id"
    return 200, None


def sent_token(prepared, query):
    auth = prepared.headers.get("Authorization")
    if auth is not None:
        scheme, _, rest = auth.partition(" ")
        if rest and scheme.lower() == "bearer":
            return rest.strip(" ")
    if "access_token" in query:
        return query["access_token"]
    for pair in prepared.headers.get("Cookie", "").split(";"):
        name, eq, value = pair.partition("=")
        if eq and value and name.strip(" ") == "hub_token":  # `hub_token=` with no value is no cookie
            return value.strip(" ")
    return None


def token_claims(token, now):
    """The claims of a token the hub accepts, or the error code it refuses it with."""
    parts = token.split(".")
    if len(parts) != 3:
        return "invalid_token"
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return "invalid_token"
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        return "unsupported_alg" if isinstance(header, dict) and "alg" in header else "invalid_token"
    expected = hmac.new(TOKEN_SECRET.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if b64url(expected) != parts[2]:
        return "invalid_token"
    if claims["exp"] <= now:
        return "token_expired"
    return claims


@schema.include(operation_id="streamExecution").parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_stream(case, fuzz_hub, http):
    variant = stream_variant(case)
    # An invalid Origin made on purpose goes out as generated; otherwise the Origin is varied too.
    origin = "as_generated" if negated(case, ParameterLocation.HEADER) else \
        ORIGINS[zlib.crc32(case_key(case, b"origin")) % len(ORIGINS)]

    def prepare(prepared):
        if origin == "allowed":
            prepared.headers["Origin"] = ALLOWED_ORIGIN
        elif origin == "absent":
            prepared.headers.pop("Origin", None)
        prepare.sent = prepared

    response = send(case, http, fuzz_hub, prepare, stream=True)
    try:
        first = read_first_block(response) if response.status_code == 200 else response.content
    finally:
        response.close()
    if response.status_code == 200:
        # As schemathesis's own transport does with a stream it cuts short: the bytes read become the body.
        response._content = first
        response._content_consumed = True
        setattr(response, STREAM_CUT_SHORT_ATTRIBUTE, True)
        wait_for_closed_streams(fuzz_hub)
        STREAMS_PER_WORKSPACE[urllib.parse.urlsplit(prepare.sent.url).path.split("/")[4]] += 1
    status, code = expect_stream(prepare.sent, variant, int(time.time()))
    record(case, code or "ok", response)
    case.validate_response(response, checks=CHECKS)

    assert (response.status_code, error_of(response)) == (status, code), \
        (variant, prepare.sent.method, prepare.sent.url, prepare.sent.headers, response.content[:300])
    if status == 200:
        assert response.headers["Content-Type"] == "text/event-stream", response.headers
        assert first.startswith(b"retry: 3000\n\n"), first


# --------------------------------------------------------------------------------------------- probes

@schema.include(operation_id=["health", "ready", "metrics"]).parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_probes(case, fuzz_hub, http):
    response = send(case, http, fuzz_hub)
    path = urllib.parse.urlsplit(response.request.url).path
    method = response.request.method
    record(case, "ok" if response.status_code == 200 else error_of(response), response)
    case.validate_response(response, checks=CHECKS)
    if method in ("GET", "HEAD"):
        assert response.status_code == 200, (method, path, response.content)
        if method == "GET" and path == "/healthz":
            assert json.loads(response.content) == {"status": "ok"}
        if method == "GET" and path == "/readyz":
            broker = "redis" if fuzz_hub.model.redis else "embedded"
            assert json.loads(response.content) == {"status": "ready", "broker": broker, **(
                {"redis": "up"} if broker == "redis" else {})}
    else:
        assert (response.status_code, response.headers["Allow"], error_of(response)) == (
            405, "GET, HEAD", "method_not_allowed"), (method, path, response.content)


# --------------------------------------------------------------------------------------------- what the run did

def test_fuzzing_reached_every_outcome():
    """The fuzz tests above ran (this module's order), every operation got its cases, and the cases reached past
    authentication: every refusal the hub can give an operation without Redis trouble or a full workspace, and
    acceptance. Streams were opened and closed on one workspace more often than its cap of 5 allows at once."""
    ingest_op = "POST /v1/jobs/progress"
    stream_op = "GET /api/v1/workspaces/{workspace}/executions/{execution}/stream"
    probes = {"GET /healthz", "GET /readyz", "GET /metrics"}
    assert set(CASES) == {ingest_op, stream_op} | probes, CASES
    # Each of the two operations went through schemathesis's three phases: the document's examples, the coverage
    # phase's boundary and missing-part cases (a fixed set for this schemathesis version) and EXAMPLES fuzzed cases.
    for op, coverage_floor in ((ingest_op, 500), (stream_op, 40)):
        assert PHASES[(op, "examples")] >= 1 and PHASES[(op, "coverage")] >= coverage_floor, PHASES
        assert PHASES[(op, "fuzzing")] >= EXAMPLES, PHASES
    assert all(CASES[p] >= 3 for p in probes), CASES
    reached = {op: set(counts) for op, counts in OUTCOMES.items()}
    assert reached[ingest_op] >= {
        ("accepted", 202), ("invalid_event", 400), ("missing_signature", 401), ("stale_timestamp", 401),
        ("bad_signature", 403), ("method_not_allowed", 405), ("unsupported_media_type", 415)}, reached[ingest_op]
    assert reached[stream_op] >= {
        ("ok", 200), ("invalid_last_event_id", 400), ("unauthenticated", 401), ("invalid_token", 401),
        ("token_expired", 401), ("forbidden", 403), ("origin_not_allowed", 403), ("not_found", 404),
        ("method_not_allowed", 405)}, reached[stream_op]
    assert max(STREAMS_PER_WORKSPACE.values()) > 5, STREAMS_PER_WORKSPACE
    print("\ncases per operation:", dict(CASES))
    print("cases per phase:", dict(PHASES))
    for op, counts in OUTCOMES.items():
        print(op, dict(sorted(counts.items(), key=str)))
