// hub.js: the browser client of the execution stream hub. One dependency-free ES module, no build step.
// Wire protocol: Protocol/README.md. API and usage: Protocol/CLIENT.md.
//
//   import { HubClient } from "/client/hub.js";
//   const hub = new HubClient({ getToken: async () => (await fetch("/my/token")).text() });
//   const sub = hub.subscribe("w1", "e9", { since: 0 });
//   sub.on("event", (ev) => console.log(ev.seq, ev.event, ev.node_key));

/** The event types the hub delivers; SSE dispatches each under its own name, so each needs a listener. */
export const EVENT_TYPES = ["execution.started", "node.started", "node.completed", "node.failed", "node.log",
  "execution.completed", "execution.failed"];

/** A minimal event emitter: listeners are called in registration order; one that throws does not stop the others. */
export class Emitter {
  #listeners = new Map(); // name -> array of {fn, once}

  /** Adds a listener; returns a function that removes it. */
  on(name, fn) {
    const list = this.#listeners.get(name) ?? [];
    list.push({ fn, once: false });
    this.#listeners.set(name, list);
    return () => this.off(name, fn);
  }

  /** Like `on`, but the listener is removed after its first call. */
  once(name, fn) {
    this.on(name, fn);
    this.#listeners.get(name).at(-1).once = true;
    return () => this.off(name, fn);
  }

  /** Removes a listener added with `on` or `once` (without `fn`: every listener of `name`). */
  off(name, fn) {
    if (!fn) { this.#listeners.delete(name); return; }
    const list = (this.#listeners.get(name) ?? []).filter((l) => l.fn !== fn);
    if (list.length) this.#listeners.set(name, list); else this.#listeners.delete(name);
  }

  emit(name, ...args) {
    const list = this.#listeners.get(name);
    if (!list) return;
    for (const l of [...list]) { // a copy: listeners may add or remove listeners
      if (l.once) this.off(name, l.fn);
      try { l.fn(...args); } catch (err) { console.error(`hub.js: a '${name}' listener threw`, err); }
    }
  }
}

/** One watched execution. Emits 'event', 'subscribed', 'truncated', 'error'. Made by `HubClient.subscribe`. */
export class Subscription extends Emitter {
  constructor(client, workspace, execution, since) {
    super();
    this.client = client;
    this.workspace = workspace;
    this.execution = execution;
    /** The seq of the last event delivered (null: none yet, live only); the resume point of every reconnection. */
    this.lastSeq = since ?? null;
    this.active = true;
  }

  get key() { return `${this.workspace}/${this.execution}`; }

  /** Stops watching; no more events are emitted. */
  unsubscribe() { this.client._unsubscribe(this); }
}

/** The `exp` claim of a JWT (Unix seconds), or null when the token cannot be read. The client never verifies it:
 *  it only needs to know when to ask for a fresh one. */
function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="))).exp;
    return Number.isFinite(exp) ? exp : null;
  } catch { return null; }
}

export class HubClient extends Emitter {
  #opts;
  #subs = new Map();         // "workspace/execution" -> Subscription
  #state = "closed";
  #transport;
  #lastTransport = null;     // the transport of the last 'state' event
  #started = false;          // connect() was called and close() was not
  #token = null;             // last token from getToken(), and its expiry
  #tokenExp = null;
  #tokenCall = null;         // the pending getToken() call, shared by streams that open together
  #refreshing = null;        // the pending refresh, so token.expiring and the timer refresh once
  #refreshTimer = null;

  // WebSocket
  #ws = null;
  #wsOpen = false;           // the current socket has opened
  #wsOpened = false;         // any WebSocket of this client ever opened: then never fall back to SSE
  #wsFailures = 0;           // consecutive attempts that failed before opening
  #attempt = 0;              // backoff exponent; reset once a connection proves alive (first message)
  #retryTimer = null;
  #watchdog = null;
  #nextId = 1;
  #pending = new Map();      // op id -> {op, sub}

  // SSE: one EventSource per subscription
  #streams = new Map();      // key -> {es, timer, attempt, open}

  /**
   * @param {object} [options]
   * @param {string} [options.url] hub base URL (http[s]://host[:port]); default location.origin
   * @param {() => Promise<string>|string} [options.getToken] returns a watcher JWT
   * @param {'auto'|'websocket'|'sse'} [options.transport]
   * @param {number} [options.minDelayMs] first reconnection delay cap (full jitter), default 250
   * @param {number} [options.maxDelayMs] largest reconnection delay cap, default 10000
   * @param {number} [options.heartbeatTimeoutMs] silence after which a WebSocket is taken for dead, default 40000
   * @param {number} [options.wsAttemptsBeforeFallback] 'auto': failed upgrades (never opened) before SSE, default 2
   * @param {number} [options.refreshEarlyMs] refresh the token this long before `exp`, default 60000
   */
  constructor(options = {}) {
    super();
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    this.#opts = {
      url: globalThis.location?.origin ?? "", getToken: null, transport: "auto", minDelayMs: 250, maxDelayMs: 10000,
      heartbeatTimeoutMs: 40000, wsAttemptsBeforeFallback: 2, refreshEarlyMs: 60000, ...given,
    };
    this.#opts.url = String(this.#opts.url).replace(/\/+$/, "");
    const hasWebSocket = typeof globalThis.WebSocket === "function";
    if (this.#opts.transport === "websocket" && !hasWebSocket) throw new Error("WebSocket is not available");
    this.#transport = this.#opts.transport === "sse" || !hasWebSocket ? "sse" : "websocket";
  }

  /** 'connecting' | 'open' | 'reconnecting' | 'closed' */
  get state() { return this.#state; }
  /** 'websocket' | 'sse' */
  get transport() { return this.#transport; }
  /** The current subscriptions. */
  get subscriptions() { return [...this.#subs.values()]; }

  /** Starts connecting (subscribe() does it too). */
  connect() {
    if (this.#started) return this;
    this.#started = true;
    this.#attempt = 0;
    if (this.#transport === "websocket") this.#openSocket();
    else { this.#setState("connecting"); for (const sub of this.#subs.values()) this.#openStream(sub); this.#sseState(); }
    return this;
  }

  /** Closes everything; subscriptions stay registered and resume (with `since`) on the next connect(). */
  close() {
    this.#started = false;
    clearTimeout(this.#retryTimer); clearTimeout(this.#refreshTimer); clearTimeout(this.#watchdog);
    if (this.#ws) { const ws = this.#ws; this.#detachSocket(); ws.close(1000, "client closed"); }
    for (const key of [...this.#streams.keys()]) this.#closeStream(key);
    this.#setState("closed");
  }

  /**
   * Watches one execution. `since`: resume after this seq (0 = the whole history still kept); omitted: live only.
   * Subscribing again to the same execution returns the existing Subscription.
   */
  subscribe(workspace, execution, { since } = {}) {
    const key = `${workspace}/${execution}`;
    const existing = this.#subs.get(key);
    if (existing) return existing;
    const sub = new Subscription(this, workspace, execution, since);
    this.#subs.set(key, sub);
    if (!this.#started) this.connect();
    else if (this.#transport === "websocket") { if (this.#state === "open") this.#sendSubscribe(sub); }
    else { this.#openStream(sub); this.#sseState(); }
    return sub;
  }

  _unsubscribe(sub) {
    if (!sub.active) return;
    sub.active = false;
    this.#subs.delete(sub.key);
    if (this.#transport === "websocket") {
      if (this.#state === "open") this.#send({ op: "unsubscribe", workspace: sub.workspace, execution: sub.execution }, sub);
    } else { this.#closeStream(sub.key); this.#sseState(); }
  }

  // ---- shared ------------------------------------------------------------------------------------------------

  #setState(state) {
    if (state === this.#state && this.#lastTransport === this.#transport) return;
    this.#state = state;
    this.#lastTransport = this.#transport;
    this.emit("state", { state, transport: this.#transport });
  }

  /** Full jitter (random between 0 and the capped exponential): many clients dropped at once do not return in step. */
  #delay(attempt) {
    const cap = Math.min(this.#opts.maxDelayMs, this.#opts.minDelayMs * 2 ** Math.min(attempt, 30));
    return Math.random() * cap;
  }

  /** A token valid for at least refreshEarlyMs more (cached; getToken() is called when there is none). */
  async #getToken(force = false) {
    if (!this.#opts.getToken) return null;
    const fresh = this.#token && (this.#tokenExp === null || this.#tokenExp * 1000 - Date.now() > this.#opts.refreshEarlyMs);
    if (!force && fresh) return this.#token;
    this.#tokenCall ??= (async () => {
      try {
        const token = String(await this.#opts.getToken());
        this.#token = token;
        this.#tokenExp = tokenExpiry(token);
        return token;
      } finally { this.#tokenCall = null; }
    })();
    return this.#tokenCall;
  }

  /** Gives every delivered event to its subscription, in seq order, exactly once. */
  #deliver(sub, ev) {
    if (!sub.active) return;
    if (sub.lastSeq !== null && ev.seq <= sub.lastSeq) return; // already delivered: a replay overlapping a resume
    if (sub.lastSeq !== null && ev.seq > sub.lastSeq + 1) {
      // A gap: something was lost. Drop this one and ask again from the last seq; the replay fills the gap in order.
      this.#resync(sub);
      return;
    }
    sub.lastSeq = ev.seq;
    sub.emit("event", ev);
    this.emit("event", ev);
  }

  #truncated(sub, info) {
    // The hub no longer has since+1 … first_seq-1: accept that the replay starts at first_seq, and say so.
    if (sub.lastSeq === null || sub.lastSeq < info.first_seq - 1) sub.lastSeq = info.first_seq - 1;
    const t = { workspace: sub.workspace, execution: sub.execution, since: info.since, first_seq: info.first_seq };
    sub.emit("truncated", t);
    this.emit("truncated", t);
  }

  #error(err, sub) {
    if (sub) sub.emit("error", err);
    this.emit("error", err);
  }

  #resync(sub) {
    if (sub.resyncing) return;
    sub.resyncing = true;
    if (this.#transport === "websocket") {
      if (this.#state !== "open") return; // the next open resubscribes with since anyway
      this.#send({ op: "unsubscribe", workspace: sub.workspace, execution: sub.execution }, sub);
      this.#sendSubscribe(sub);
    } else {
      this.#reopenStream(sub.key, 0);
    }
  }

  // ---- token refresh -----------------------------------------------------------------------------------------

  #scheduleRefresh(expSeconds) {
    clearTimeout(this.#refreshTimer);
    if (!expSeconds || !this.#opts.getToken || this.#transport !== "websocket") return;
    // At least a second later, so that a token shorter-lived than refreshEarlyMs cannot spin.
    const wait = Math.max(1000, expSeconds * 1000 - Date.now() - this.#opts.refreshEarlyMs);
    this.#refreshTimer = setTimeout(() => this.#refresh(), Math.min(wait, 2 ** 31 - 1));
  }

  /** Fetches a fresh token and sends it with `auth` on the open socket (the hub then keeps the connection). */
  #refresh() {
    if (this.#refreshing || !this.#opts.getToken) return this.#refreshing;
    this.#refreshing = (async () => {
      try {
        const token = await this.#getToken(true);
        if (this.#ws && this.#state === "open") this.#send({ op: "auth", token });
      } catch (err) {
        this.#error({ code: "token_refresh_failed", message: String(err?.message ?? err) });
      } finally { this.#refreshing = null; }
    })();
    return this.#refreshing;
  }

  // ---- WebSocket ---------------------------------------------------------------------------------------------

  async #openSocket() {
    clearTimeout(this.#retryTimer);
    this.#setState(this.#wsOpened || this.#wsFailures ? "reconnecting" : "connecting");
    let token;
    try { token = await this.#getToken(); } catch (err) {
      this.#error({ code: "token_unavailable", message: String(err?.message ?? err) });
      this.#scheduleReconnect(false, false); // the application's failure, not the WebSocket's: no fallback
      return;
    }
    if (!this.#started || this.#transport !== "websocket") return;
    const url = this.#opts.url.replace(/^http/, "ws") + "/v1/ws" + (token ? `?access_token=${encodeURIComponent(token)}` : "");
    let ws;
    try { ws = new WebSocket(url); } catch (err) { this.#error({ code: "websocket_failed", message: String(err) }); this.#scheduleReconnect(false); return; }
    this.#ws = ws;
    this.#armWatchdog(); // also bounds a connection attempt that never completes
    let alive = false;
    ws.onopen = () => {
      this.#wsOpen = this.#wsOpened = true;
      this.#wsFailures = 0;
      this.#pending.clear();
      this.#setState("open");
      this.#armWatchdog();
      this.#scheduleRefresh(this.#tokenExp);
      for (const sub of this.#subs.values()) this.#sendSubscribe(sub);
    };
    ws.onmessage = (m) => {
      if (!alive) { alive = true; this.#attempt = 0; } // a live hub answered: the next drop reconnects at once
      this.#armWatchdog();
      let msg;
      try { msg = JSON.parse(m.data); } catch { return; }
      this.#onMessage(msg);
    };
    ws.onclose = (e) => {
      if (this.#ws !== ws) return;
      const opened = this.#wsOpen;
      this.#detachSocket();
      // 4401: the token expired; forget it so that the reconnection asks getToken() for a fresh one.
      if (e.code === 4401) { this.#token = null; this.#tokenExp = null; }
      this.emit("disconnect", { code: e.code, reason: e.reason, wasOpen: opened });
      this.#scheduleReconnect(opened);
    };
    ws.onerror = () => {}; // a close always follows; its code says more than this event
  }

  /** Forgets the current socket (its late callbacks are ignored) and stops its timers. */
  #detachSocket() {
    const ws = this.#ws;
    this.#ws = null;
    this.#wsOpen = false;
    clearTimeout(this.#watchdog);
    clearTimeout(this.#refreshTimer);
    this.#pending.clear();
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    for (const sub of this.#subs.values()) sub.resyncing = false;
  }

  #scheduleReconnect(wasOpen, upgradeFailed = !wasOpen) {
    if (!this.#started) return;
    if (upgradeFailed) {
      this.#wsFailures++;
      // 'auto': an upgrade that never succeeds (no WebSocket route, a proxy that refuses upgrades): use SSE.
      if (this.#opts.transport === "auto" && !this.#wsOpened && this.#wsFailures >= this.#opts.wsAttemptsBeforeFallback) {
        this.#fallBackToSSE();
        return;
      }
    }
    this.#setState("reconnecting");
    const delay = this.#delay(this.#attempt++);
    this.#retryTimer = setTimeout(() => this.#openSocket(), delay);
  }

  /** Nothing at all (not even a heartbeat) for heartbeatTimeoutMs: the connection is dead even if the OS has not
   *  noticed (sleeping laptop, lost Wi-Fi): drop it and reconnect. */
  #armWatchdog() {
    clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(() => {
      const ws = this.#ws, wasOpen = this.#wsOpen;
      if (!ws) return;
      this.#detachSocket();
      try { ws.close(4000, "heartbeat timeout"); } catch { /* already closing */ }
      this.emit("disconnect", { code: 4000, reason: "heartbeat timeout", wasOpen });
      this.#scheduleReconnect(wasOpen);
    }, this.#opts.heartbeatTimeoutMs);
  }

  #send(obj, sub) {
    const id = this.#nextId++;
    this.#pending.set(id, { op: obj.op, sub });
    this.#ws?.send(JSON.stringify({ op: obj.op, id, ...obj }));
    return id;
  }

  #sendSubscribe(sub) {
    const msg = { op: "subscribe", workspace: sub.workspace, execution: sub.execution };
    if (sub.lastSeq !== null) msg.since = sub.lastSeq;
    sub.subscribeId = this.#send(msg, sub);
  }

  #onMessage(msg) {
    const sub = msg.workspace !== undefined ? this.#subs.get(`${msg.workspace}/${msg.execution}`) : undefined;
    const req = msg.id !== undefined ? this.#pending.get(msg.id) : undefined;
    if (req) this.#pending.delete(msg.id);
    switch (msg.type) {
      case "event": {
        if (!sub) return; // in flight when we unsubscribed
        const { type, ...ev } = msg;
        this.#deliver(sub, ev);
        return;
      }
      case "subscribed":
        if (!sub || msg.id !== sub.subscribeId) return; // the reply to an older subscribe
        sub.resyncing = false;
        // Live only: live events follow msg.seq, so it is the resume point until an event arrives.
        if (sub.lastSeq === null) sub.lastSeq = msg.seq;
        sub.emit("subscribed", { workspace: sub.workspace, execution: sub.execution, seq: msg.seq });
        return;
      case "replay.truncated":
        if (sub) this.#truncated(sub, msg);
        return;
      case "unsubscribed":
        if (msg.reason && sub) { // the hub ended it: the renewed token does not grant the workspace
          sub.active = false;
          this.#subs.delete(sub.key);
          this.#error({ code: msg.reason, message: `the hub ended the subscription to ${sub.key}`, workspace: sub.workspace, execution: sub.execution }, sub);
        }
        return;
      case "authenticated":
        this.#scheduleRefresh(msg.expires_at);
        this.emit("authenticated", { sub: msg.sub, workspaces: msg.workspaces, expires_at: msg.expires_at });
        return;
      case "token.expiring":
        this.#refresh();
        return;
      case "heartbeat":
        this.emit("heartbeat"); // the watchdog was re-armed by the message already
        return;
      case "error": {
        const target = req?.sub?.active ? req.sub : undefined;
        if (req?.op === "unsubscribe" && msg.code === "not_subscribed") return; // a resync racing a hub-side end
        if (target) target.resyncing = false;
        this.#error({ code: msg.code, message: msg.message, op: req?.op,
          workspace: target?.workspace, execution: target?.execution }, target);
        return;
      }
    }
  }

  // ---- SSE fallback ------------------------------------------------------------------------------------------

  #fallBackToSSE() {
    clearTimeout(this.#retryTimer);
    this.#transport = "sse";
    this.#attempt = 0;
    this.#setState("connecting");
    for (const sub of this.#subs.values()) this.#openStream(sub);
    this.#sseState();
  }

  /** The client's state over SSE: reconnecting while a stream that failed or was ended reopens; connecting until
   *  the first streams open; open otherwise (a stream opening for a new subscription does not count). */
  #sseState() {
    if (!this.#started) return;
    const streams = [...this.#streams.values()];
    if (streams.some((s) => s.retrying)) this.#setState("reconnecting");
    else if (this.#state === "connecting" && streams.some((s) => !s.open)) this.#setState("connecting");
    else this.#setState("open");
  }

  async #openStream(sub) {
    const key = sub.key;
    const stream = this.#streams.get(key) ?? { es: null, timer: null, attempt: 0, open: false, retrying: false };
    this.#streams.set(key, stream);
    stream.timer = null;
    let token;
    try { token = await this.#getToken(); } catch (err) {
      this.#error({ code: "token_unavailable", message: String(err?.message ?? err) }, sub);
      this.#reopenStream(key);
      return;
    }
    if (!sub.active || this.#streams.get(key) !== stream || stream.es || stream.timer) return;
    const q = new URLSearchParams();
    if (token) q.set("access_token", token);
    // EventSource cannot set Last-Event-ID on the first request: the hub takes it from the query too.
    if (sub.lastSeq !== null) q.set("last_event_id", String(sub.lastSeq));
    const path = `/api/v1/workspaces/${encodeURIComponent(sub.workspace)}/executions/${encodeURIComponent(sub.execution)}/stream`;
    // Credentials (the hub_token cookie) only when there is no token: a cross-origin request with credentials needs
    // more of the server's CORS answer than one without.
    const es = new EventSource(`${this.#opts.url}${path}${q.toString() ? "?" + q : ""}`, { withCredentials: !token });
    stream.es = es;
    stream.open = false;
    sub.resyncing = false;
    es.onopen = () => {
      stream.open = true;
      stream.retrying = false;
      this.#sseState();
      sub.emit("subscribed", { workspace: sub.workspace, execution: sub.execution, seq: null });
    };
    const onEvent = (e) => {
      stream.attempt = 0;
      let ev;
      try { ev = JSON.parse(e.data); } catch { return; }
      this.#deliver(sub, ev);
    };
    for (const type of EVENT_TYPES) es.addEventListener(type, onEvent);
    es.addEventListener("replay.truncated", (e) => this.#truncated(sub, JSON.parse(e.data)));
    // The hub ends the stream (connection age, token expiry): reopen at once from our own last seq.
    es.addEventListener("reconnect", (e) => {
      let info = {};
      try { info = JSON.parse(e.data); } catch { /* keep going */ }
      if (info.reason === "token_expired") { this.#token = null; this.#tokenExp = null; }
      this.#reopenStream(key, 0);
    });
    // EventSource would retry by itself, but with the URL's stale last_event_id and without a fresh token, and not
    // at all after an HTTP refusal (401, 429): close it and reopen ourselves with backoff.
    es.onerror = () => { stream.open = false; this.#reopenStream(key); };
  }

  #reopenStream(key, delay) {
    const stream = this.#streams.get(key);
    const sub = this.#subs.get(key);
    if (!stream || !sub || !this.#started) return;
    if (stream.es) { stream.es.close(); stream.es = null; } // first, so the workspace's stream cap is not hit
    stream.open = false;
    stream.retrying = true;
    if (stream.timer) return;
    const wait = delay ?? this.#delay(stream.attempt++);
    stream.timer = setTimeout(() => { stream.timer = null; this.#openStream(sub); this.#sseState(); }, wait);
    this.#sseState();
  }

  #closeStream(key) {
    const stream = this.#streams.get(key);
    if (!stream) return;
    clearTimeout(stream.timer);
    stream.es?.close();
    this.#streams.delete(key);
  }
}

export default HubClient;
