"""The browser client (/client/hub.js) and the demo page (/demo/) in a real browser: Debian's headless Chromium
driven by Selenium through chromedriver.

Each test starts its own hub with `--demo`. Nothing sleeps to synchronise: every wait is a WebDriverWait on the
page (its DOM and `window.hubDemo`, where the page records the seq of every event it rendered and every connection
state), a blocking read with a timeout, or a condition on the hub's log. The only sleeps pace an engine that posts
its events slowly on purpose (test_resumes_after_server_close).

Needs `apt-get install -y chromium chromium-driver`; without them every test here FAILS (it does not skip)."""
import base64
import json
import os
import shutil
import time

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

import hubclient as hc
from conftest import collect_stderr
from hubclient import Watcher, ingest, mint, open_live_sse

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
SCREENSHOT = os.path.join(os.path.dirname(__file__), "..", "..", ".build", "screenshots", "demo.png")
WS = "demo"  # the workspace the demo session's token grants
DEFLATE = "deflate=permessage-deflate; server_no_context_takeover; client_no_context_takeover"
FINAL_NODE_STATES = {"completed", "skipped", "failed", "not-run"}
TIMEOUT = 60  # generous: two cores, a debug hub and a browser share the machine

WORKFLOW = [("trigger", []), ("fetch_orders", ["trigger"]), ("fetch_customers", ["trigger"]),
            ("join", ["fetch_orders", "fetch_customers"]), ("score_risk", ["join"]), ("score_value", ["join"]),
            ("notify", ["score_risk", "score_value"]), ("archive", ["join"])]


@pytest.fixture
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(p) or shutil.which(p))]
    if missing:
        pytest.fail(f"the browser tests need Chromium and chromedriver; missing {', '.join(missing)}: "
                    "run `apt-get install -y chromium chromium-driver`", pytrace=False)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1440,900", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    # An exact 1440x900 viewport, whatever the headless window's decorations take.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1440, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    try:
        yield driver
    finally:
        driver.quit()


def start_hub(hub_factory, *args):
    hub = hub_factory("--demo", *hc.SECRET_ARGS, *args)
    collect_stderr(hub)
    return hub


def base(hub):
    return f"http://{hub.host}:{hub.port}"


# --- the page -----------------------------------------------------------------------------------------------------

PAGE_STATE_JS = """
const ex = arguments[0];
const demo = window.hubDemo || {events: {}, states: []};
const card = ex ? document.querySelector(`.exec[data-execution="${CSS.escape(ex)}"]`) : null;
const nodes = {};
for (const n of card ? card.querySelectorAll('.node') : []) nodes[n.getAttribute('data-node')] = n.getAttribute('data-status');
const conn = document.getElementById('conn-text');
return {status: card ? card.getAttribute('data-status') : null, nodes, events: (demo.events || {})[ex] || [],
        states: demo.states || [], transport: demo.transport || null, errors: demo.errors || [],
        conn: conn ? conn.textContent : null,
        cards: [...document.querySelectorAll('.exec')].map(c => [c.getAttribute('data-execution'), c.getAttribute('data-status')])};
"""


def page_state(driver, execution=None):
    return driver.execute_script(PAGE_STATE_JS, execution)


def wait_page(driver, condition, what, execution=None, timeout=TIMEOUT):
    """Waits until condition(page_state) holds; on timeout fails with the page's state and its console."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
            lambda d: (lambda s: s if condition(s) else False)(page_state(d, execution)))
    except TimeoutException:
        state = page_state(driver, execution)
        console = "\n".join(f"  {e['level']} {e['message']}" for e in driver.get_log("browser"))
        pytest.fail(f"timed out after {timeout} s waiting for {what}\npage: {json.dumps(state)}\nconsole:\n{console}")


def finished(state, nodes=len(WORKFLOW)):
    """The execution's card is final: its status and every one of its nodes."""
    return (state["status"] in ("completed", "failed") and len(state["nodes"]) == nodes
            and all(s in FINAL_NODE_STATES for s in state["nodes"].values()))


# --- the hub's side -----------------------------------------------------------------------------------------------

def server_seqs_ws(hub, execution):
    """Every seq the hub holds for the execution, read independently over a WebSocket (since=0) without
    compression, so that any permessage-deflate in the hub's log is the browser's."""
    w = Watcher(hub, mint([WS]), timeout=10, compression=None)
    try:
        newest = w.subscribe(WS, execution, since=0)["seq"]
        return [m["seq"] for m in w.events(newest)]
    finally:
        w.close()


def server_seqs_sse(hub, execution, n):
    """The first n events the hub holds for the execution, read independently over SSE with Last-Event-ID: 0."""
    s = open_live_sse(hub, WS, execution, mint([WS]), headers={"Last-Event-ID": "0"}, timeout=10)
    try:
        out = []
        while len(out) < n:
            block = s.next_message()
            assert block is not None, f"the SSE stream ended after {out}"
            if "id" in block:
                out.append(block["json"]["seq"])
        return out
    finally:
        s.close()


def execution_events(execution):
    """An 8-node execution as an engine reports it: 1 + 8 * 3 + 1 = 26 events, in causal order."""
    events = [hc.exec_event(execution, "execution.started", workspace=WS, data={
        "workflow": "order-processing", "nodes": [{"key": k, "depends_on": d} for k, d in WORKFLOW]})]
    for i, (key, _) in enumerate(WORKFLOW):
        events.append(hc.node_event(execution, key, "node.started", {"attempt": 1}, workspace=WS))
        events.append(hc.node_event(execution, key, "node.log", {"level": "warning" if i == 3 else "info",
                                                                 "message": f"[{key}] step {i}"}, workspace=WS))
        events.append(hc.node_event(execution, key, "node.completed", workspace=WS, data={
            "duration_ms": 100 + 37 * i, "output": {"rows": 10 * i, "ok": True}}))
    events.append(hc.exec_event(execution, "execution.completed", workspace=WS,
                                data={"total_duration_ms": 6000, "node_count": len(WORKFLOW)}))
    return events


# --- the tests ----------------------------------------------------------------------------------------------------

def test_demo_page_renders_a_simulated_execution_exactly(hub_factory, browser):
    hub = start_hub(hub_factory)
    listed = {}

    def first_round(_):
        status, _, body = hc.request(hub, "GET", "/demo/executions")
        assert status == 200, body
        listed["executions"] = json.loads(body)["executions"]
        return any(e["execution"].endswith("-1") for e in listed["executions"])

    WebDriverWait(browser, TIMEOUT, poll_frequency=0.2).until(first_round, "no demo execution listed")
    executions = listed["executions"]
    assert all(e["workspace"] == WS and e["started_at"].endswith("Z") for e in executions), executions
    execution = [e["execution"] for e in executions if e["execution"].endswith("-1")][-1]  # the oldest "-1"

    browser.get(f"{base(hub)}/demo/?execution={execution}")
    state = wait_page(browser, finished, f"every node of {execution} in a final state", execution)
    assert state["status"] == "completed" and set(state["nodes"]) == {k for k, _ in WORKFLOW}, state
    assert set(state["nodes"].values()) == {"completed"}, state
    assert state["transport"] == "websocket" and state["conn"] == "connected · websocket", state

    # The browser's upgrade negotiated compression (before any other WebSocket was opened to this hub).
    opens = hub.stderr_lines.wait_for(lambda line: "websocket open" in line, timeout=10)
    assert opens and all(DEFLATE in line for line in opens), opens

    server = server_seqs_ws(hub, execution)
    assert server == list(range(1, len(server) + 1)) and len(server) >= 1 + 8 * 3 + 1, server
    state = wait_page(browser, lambda s: len(s["events"]) >= len(server), "every event on the page", execution)
    assert state["events"] == server, state
    # The graph shows durations and output summaries.
    text = browser.find_element("css selector", f'.exec[data-execution="{execution}"] .node[data-node="join"]').text
    assert "✓" in text and " B" in text and "rows" in text, text
    assert not state["errors"], state


def test_resumes_after_server_close(hub_factory, browser):
    """The hub closes every WebSocket with 1001 after 2 s while an execution posts its events over ~6.5 s: the
    client reconnects, resubscribes with since = the last seq, and renders every event exactly once."""
    hub = start_hub(hub_factory, "--max-connection-age", "2")
    execution = "slow-1"
    browser.get(f"{base(hub)}/demo/?execution={execution}")
    wait_page(browser, lambda s: "open" in s["states"], "the first connection", execution)

    events = execution_events(execution)
    seqs = []
    for event in events:
        seqs += [a["seq"] for a in ingest(hub, event)]
        time.sleep(0.25)  # pacing: a slow engine, so that several connection ages pass mid-execution
    assert seqs == list(range(1, len(events) + 1)), seqs

    state = wait_page(browser, lambda s: finished(s) and len(s["events"]) >= len(events), "the whole execution", execution)
    server = server_seqs_sse(hub, execution, len(events))
    assert state["events"] == server == seqs, state
    assert state["status"] == "completed" and set(state["nodes"].values()) == {"completed"}, state
    assert "reconnecting" in state["states"], state
    disconnects = browser.execute_script("return window.hubDemo.disconnects")
    assert disconnects and all(d["code"] == 1001 and d["reason"] == "max connection age" and d["wasOpen"]
                               for d in disconnects), disconnects
    # Each reconnection was a new upgrade: at least three over the ~6.5 s of posting.
    assert len(hub.stderr_lines.matching(lambda line: "websocket open" in line)) >= 3, hub.stderr_lines.lines
    wait_page(browser, lambda s: s["states"][-1:] == ["open"], "the connection open again", execution)


def test_falls_back_to_sse_when_websocket_is_refused(hub_factory, browser):
    hub = start_hub(hub_factory, "--websocket", "false")
    status, _, body = hc.request(hub, "GET", "/v1/ws")
    assert status == 404, body
    execution = "sse-1"
    browser.get(f"{base(hub)}/demo/?execution={execution}")
    state = wait_page(browser, lambda s: s["transport"] == "sse" and s["states"][-1:] == ["open"],
                      "the SSE fallback", execution)

    events = execution_events(execution)
    seqs = [a["seq"] for a in ingest(hub, events[:10])] + [a["seq"] for a in ingest(hub, events[10:])]
    state = wait_page(browser, lambda s: finished(s) and len(s["events"]) >= len(events), "the whole execution", execution)
    assert state["events"] == server_seqs_sse(hub, execution, len(events)) == seqs, state
    assert state["transport"] == "sse" and state["conn"] == "connected · sse", state
    assert not hub.stderr_lines.matching(lambda line: "websocket open" in line)


def test_forced_sse_transport(hub_factory, browser):
    """?transport=sse never tries the WebSocket; a stream reopens with last_event_id after the hub ends it."""
    hub = start_hub(hub_factory, "--max-connection-age", "2")
    execution = "forced-sse"
    browser.get(f"{base(hub)}/demo/?execution={execution}&transport=sse")
    wait_page(browser, lambda s: s["states"][-1:] == ["open"], "the SSE stream", execution)
    events = execution_events(execution)
    for i in range(0, len(events), 4):
        ingest(hub, events[i:i + 4])
        time.sleep(0.5)  # pacing: the stream's age limit (2 s) passes mid-execution
    state = wait_page(browser, lambda s: finished(s) and len(s["events"]) >= len(events), "the whole execution", execution)
    assert state["events"] == list(range(1, len(events) + 1)), state
    assert state["transport"] == "sse" and "reconnecting" in state["states"], state
    assert not hub.stderr_lines.matching(lambda line: "websocket open" in line)


def test_token_refresh_keeps_the_connection(hub_factory, browser):
    """A token that expires in 63 s: the hub says token.expiring at once (60 s early); the client asks getToken()
    for a fresh one and sends `auth` on the same socket, which stays open."""
    hub = start_hub(hub_factory)
    short, fresh = mint([WS], ttl=63), mint([WS], ttl=3600)
    browser.get(f"{base(hub)}/healthz")  # any page of the hub's origin
    result = browser.execute_async_script("""
        const [short, fresh, done] = arguments;
        (async () => {
          const { HubClient } = await import('/client/hub.js');
          const calls = [], disconnects = [];
          const client = new HubClient({ getToken: async () => { calls.push(Date.now()); return calls.length === 1 ? short : fresh; } });
          client.on('disconnect', (d) => disconnects.push(d));
          const auth = new Promise((resolve) => client.on('authenticated', resolve));
          client.subscribe('demo', 'refresh-1', { since: 0 });
          const a = await auth;
          client.close();
          return { calls: calls.length, disconnects, expires_at: a.expires_at, transport: client.transport };
        })().then(done, (e) => done({ error: String(e) }));
    """, short, fresh)
    claims = json.loads(base64.urlsafe_b64decode(fresh.split(".")[1] + "=="))
    assert result.get("calls", 0) >= 2 and result["disconnects"] == [], result
    assert result["expires_at"] == claims["exp"] and result["transport"] == "websocket", result


def test_heartbeat_watchdog_reconnects_a_silent_socket(hub_factory, browser):
    """With the hub's heartbeat off nothing arrives on an idle socket: after heartbeatTimeoutMs the client takes it
    for dead, reconnects and resubscribes. With heartbeats every second the same client keeps its socket."""
    for heartbeat, expect_drop in (("0", True), ("1", False)):
        hub = start_hub(hub_factory, "--heartbeat", heartbeat)
        browser.get(f"{base(hub)}/healthz")
        result = browser.execute_async_script("""
            const [token, expectDrop, done] = arguments;
            (async () => {
              const { HubClient } = await import('/client/hub.js');
              const client = new HubClient({ getToken: () => token, heartbeatTimeoutMs: 2500 });
              const seen = { disconnects: [], heartbeats: 0, subscribed: 0, states: [] };
              client.on('disconnect', (d) => seen.disconnects.push(d));
              client.on('heartbeat', () => seen.heartbeats++);
              client.on('state', (s) => seen.states.push(s.state));
              const sub = client.subscribe('demo', 'quiet-1', { since: 0 });
              // Either dropped and back (subscribed again), or four heartbeats (> 2500 ms) on the first socket.
              await new Promise((resolve) => {
                sub.on('subscribed', () => { if (++seen.subscribed === 2 && expectDrop) resolve(); });
                client.on('heartbeat', () => { if (seen.heartbeats >= 4 && !expectDrop) resolve(); });
              });
              client.close();
              return seen;
            })().then(done, (e) => done({ error: String(e) }));
        """, mint([WS]), expect_drop)
        if expect_drop:
            assert [d["reason"] for d in result["disconnects"]] == ["heartbeat timeout"], result
            assert result["states"][-3:] == ["reconnecting", "open", "closed"] and result["heartbeats"] == 0, result
        else:
            assert result["disconnects"] == [] and result["heartbeats"] >= 4 and result["subscribed"] == 1, result
        hub.stop()


CLIENT_LOGIC_JS = r"""
const done = arguments[arguments.length - 1];
(async () => {
  // Stand-ins for the browser's WebSocket and EventSource that the test drives as the hub would.
  class FakeWS {
    static all = [];
    constructor(url) { this.url = url; this.sent = []; FakeWS.all.push(this); }
    send(s) { this.sent.push(JSON.parse(s)); }
    close(code, reason) { this.closedWith = { code, reason }; }
    open() { this.onopen?.({}); }
    msg(obj) { this.onmessage?.({ data: JSON.stringify(obj) }); }
    drop(code, reason = '') { this.onclose?.({ code, reason }); }
  }
  class FakeES {
    static all = [];
    constructor(url) { this.url = new URL(url); this.listeners = {}; this.closed = false; FakeES.all.push(this); }
    addEventListener(type, fn) { (this.listeners[type] ??= []).push(fn); }
    close() { this.closed = true; }
    open() { this.onopen?.({}); }
    send(type, obj) { for (const fn of this.listeners[type] ?? []) fn({ data: JSON.stringify(obj) }); }
  }
  window.WebSocket = FakeWS;
  window.EventSource = FakeES;
  const { HubClient } = await import('/client/hub.js');
  const check = (cond, what) => { if (!cond) throw new Error(what); };
  const until = async (cond, what) => {
    for (let i = 0; i < 400 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
    check(cond(), `timed out: ${what}`);
  };
  const ev = (seq) => ({ type: 'event', execution: 'e', workspace: 'w', seq, event: 'node.log', node_key: 'n',
                         timestamp: '2026-11-25T12:00:00.000Z', data: { level: 'info', message: `m${seq}` } });

  // --- WebSocket: dedupe, gap, resume, truncation, token refresh ---
  let tokens = 0;
  const client = new HubClient({ url: 'http://hub.test', getToken: async () => `tok${++tokens}`, minDelayMs: 1, maxDelayMs: 4 });
  const got = [], clientGot = [], truncated = [], states = [];
  client.on('event', (e) => clientGot.push(e.seq));
  client.on('state', (s) => states.push(`${s.state}/${s.transport}`));
  const sub = client.subscribe('w', 'e', { since: 0 });
  sub.on('event', (e) => got.push(e.seq));
  sub.on('truncated', (t) => truncated.push(t));
  await until(() => FakeWS.all.length === 1, 'first socket');
  const ws0 = FakeWS.all[0];
  check(ws0.url === 'ws://hub.test/v1/ws?access_token=tok1', ws0.url);
  ws0.open();
  check(JSON.stringify(ws0.sent[0]) === '{"op":"subscribe","id":1,"workspace":"w","execution":"e","since":0}', JSON.stringify(ws0.sent));
  ws0.msg({ type: 'subscribed', id: 1, workspace: 'w', execution: 'e', seq: 0 });
  ws0.msg(ev(1)); ws0.msg(ev(2)); ws0.msg(ev(2)); ws0.msg(ev(1));    // duplicates: dropped
  ws0.msg(ev(4));                                                      // a gap: dropped, resubscribe since 2
  check(ws0.sent.length === 3 && ws0.sent[1].op === 'unsubscribe' && ws0.sent[2].op === 'subscribe' && ws0.sent[2].since === 2,
        `resync: ${JSON.stringify(ws0.sent)}`);
  ws0.msg(ev(5));                                                      // still a gap while resyncing: no second resync
  check(ws0.sent.length === 3, 'one resync');
  ws0.msg({ type: 'unsubscribed', id: ws0.sent[1].id, workspace: 'w', execution: 'e' });
  ws0.msg({ type: 'subscribed', id: ws0.sent[2].id, workspace: 'w', execution: 'e', seq: 5 });
  ws0.msg(ev(3)); ws0.msg(ev(4)); ws0.msg(ev(5));
  check(got.join() === '1,2,3,4,5' && clientGot.join() === '1,2,3,4,5', `after resync: ${got}`);

  ws0.msg({ type: 'token.expiring', expires_at: 1764072000 });           // refresh: getToken, then auth on the socket
  await until(() => ws0.sent.length === 4, 'auth op');
  check(ws0.sent[3].op === 'auth' && ws0.sent[3].token === 'tok2', JSON.stringify(ws0.sent[3]));

  ws0.drop(1001, 'max connection age');                                 // the hub's age limit: reconnect, since=5
  await until(() => FakeWS.all.length === 2, 'second socket');
  const ws1 = FakeWS.all[1];
  ws1.open();
  check(ws1.sent[0].op === 'subscribe' && ws1.sent[0].since === 5, JSON.stringify(ws1.sent));
  ws1.msg({ type: 'subscribed', id: ws1.sent[0].id, workspace: 'w', execution: 'e', seq: 12 });
  ws1.msg({ type: 'replay.truncated', workspace: 'w', execution: 'e', since: 5, first_seq: 8 });
  ws1.msg(ev(8)); ws1.msg(ev(9));
  check(truncated.length === 1 && truncated[0].first_seq === 8 && got.join() === '1,2,3,4,5,8,9', `truncated: ${got}`);

  ws1.drop(4401, 'token expired');                                      // a fresh token for the reconnection
  await until(() => FakeWS.all.length === 3, 'third socket');
  check(FakeWS.all[2].url.endsWith('access_token=tok3'), FakeWS.all[2].url);
  FakeWS.all[2].open();
  check(FakeWS.all[2].sent[0].since === 9, JSON.stringify(FakeWS.all[2].sent));
  FakeWS.all[2].drop(1006);                                             // failures after a success never fall back
  await until(() => FakeWS.all.length === 4, 'fourth socket');
  FakeWS.all[3].drop(1006);
  await until(() => FakeWS.all.length === 5, 'fifth socket');
  check(client.transport === 'websocket', 'no fallback once a WebSocket opened');
  check(states.includes('reconnecting/websocket'), states.join());
  sub.unsubscribe();
  client.close();
  check(client.state === 'closed', client.state);

  // --- 'auto' falls back to SSE after two upgrades that never open; SSE resumes with last_event_id ---
  const sse = new HubClient({ url: 'http://hub.test', getToken: () => 'tokS', minDelayMs: 1, maxDelayMs: 4 });
  const sseStates = [], sseGot = [];
  sse.on('state', (s) => sseStates.push(`${s.state}/${s.transport}`));
  const sub2 = sse.subscribe('w', 'e', { since: 3 });
  sub2.on('event', (e) => sseGot.push(e.seq));
  const before = FakeWS.all.length;
  await until(() => FakeWS.all.length === before + 1, 'upgrade 1');
  FakeWS.all.at(-1).drop(1006);
  await until(() => FakeWS.all.length === before + 2, 'upgrade 2');
  FakeWS.all.at(-1).drop(1006);
  await until(() => FakeES.all.length === 1, 'EventSource');
  check(sse.transport === 'sse', sse.transport);
  const es0 = FakeES.all[0];
  check(es0.url.pathname === '/api/v1/workspaces/w/executions/e/stream' && es0.url.searchParams.get('access_token') === 'tokS'
        && es0.url.searchParams.get('last_event_id') === '3', es0.url.href);
  es0.open();
  check(sse.state === 'open', sse.state);
  const sseEv = (seq) => { const { type, ...e } = ev(seq); return e; };
  es0.send('node.log', sseEv(4)); es0.send('node.log', sseEv(4)); es0.send('node.log', sseEv(5));
  es0.send('reconnect', { reason: 'max_connection_age', last_event_id: 5 });
  await until(() => FakeES.all.length === 2, 'EventSource reopened');
  check(es0.closed && FakeES.all[1].url.searchParams.get('last_event_id') === '5', FakeES.all[1].url.href);
  FakeES.all[1].open();
  FakeES.all[1].send('node.log', sseEv(7));                             // a gap: reopen from 5
  await until(() => FakeES.all.length === 3, 'EventSource after a gap');
  check(FakeES.all[1].closed && FakeES.all[2].url.searchParams.get('last_event_id') === '5', FakeES.all[2].url.href);
  FakeES.all[2].onerror?.({});                                          // an error: close, reopen with backoff
  await until(() => FakeES.all.length === 4, 'EventSource after an error');
  check(FakeES.all[2].closed && sseGot.join() === '4,5', `sse: ${sseGot}`);
  check(sseStates[0] === 'connecting/websocket' && sseStates.includes('connecting/sse') && sseStates.includes('open/sse'), sseStates.join());
  sse.close();
  check(FakeES.all[3].closed, 'close() closes the EventSources');

  // --- an upgrade that never completes is bounded by heartbeatTimeoutMs and counts as a failed attempt ---
  const hung = new HubClient({ url: 'http://hub.test', getToken: () => 'tokH', heartbeatTimeoutMs: 50, minDelayMs: 1, maxDelayMs: 4 });
  const hungDrops = [];
  hung.on('disconnect', (d) => hungDrops.push(d));
  const nES = FakeES.all.length;
  hung.subscribe('w', 'h');
  await until(() => FakeES.all.length === nES + 1, 'fallback after two hung upgrades');
  check(hungDrops.length === 2 && hungDrops.every((d) => d.reason === 'heartbeat timeout' && !d.wasOpen), JSON.stringify(hungDrops));
  check(FakeWS.all.at(-1).closedWith?.code === 4000 && hung.transport === 'sse', 'hung sockets closed');
  hung.close();
  return { ok: true };
})().then(done, (e) => done({ error: String(e && e.stack || e) }));
"""


def test_client_logic_with_stand_in_transports(hub_factory, browser):
    """hub.js against stand-ins for WebSocket and EventSource, driven as the hub would: duplicates dropped, a gap
    resubscribed with since, resume after 1001 and 4401, replay.truncated, the token refresh, the fallback to SSE
    after two failed upgrades (and never after one succeeded), SSE resumption with last_event_id, and an upgrade
    that hangs."""
    hub = start_hub(hub_factory)
    browser.get(f"{base(hub)}/healthz")  # only to load hub.js from the hub's origin
    browser.set_script_timeout(30)
    result = browser.execute_async_script(CLIENT_LOGIC_JS)
    assert result == {"ok": True}, result.get("error")


def test_screenshot_of_the_demo(hub_factory, browser):
    hub = start_hub(hub_factory, "--demo-interval", "4")
    browser.get(f"{base(hub)}/demo/")

    def lively(s):
        statuses = {status for _, status in s["cards"]}
        return len(s["cards"]) == 4 and statuses == {"running", "completed", "failed"} and s["states"][-1:] == ["open"]

    state = wait_page(browser, lively, "four executions: running, completed and failed ones")
    # Every execution the page watched got its events once each, in order, over the one client.
    events = browser.execute_script("return window.hubDemo.events")
    assert len(events) >= 4 and all(seqs == list(range(1, len(seqs) + 1)) for seqs in events.values()), events
    # Every card shows its graph. Cards come and go every 4 s, and a new one has no graph until its first event
    # arrives, so this reads each card's nodes and waits until all four have theirs.
    per_card = "return [...document.querySelectorAll('.exec')].map(c => c.querySelectorAll('svg .node').length)"
    try:
        WebDriverWait(browser, TIMEOUT, poll_frequency=0.1).until(
            lambda d: d.execute_script(per_card) == [len(WORKFLOW)] * 4)
    except TimeoutException:
        pytest.fail(f"cards without their graph: {browser.execute_script(per_card)}; page: {json.dumps(state)}")
    os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
    assert browser.save_screenshot(SCREENSHOT)
    assert os.path.getsize(SCREENSHOT) > 10_000
