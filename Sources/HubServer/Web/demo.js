// The hub's live demo: watches up to four executions over ONE HubClient and draws each as a graph of nodes.
// Query parameters: ?execution=<id> watches only that execution (since=0); ?transport=sse|websocket|auto.
import { HubClient } from "/client/hub.js";

const params = new URLSearchParams(location.search);
const ONLY = params.get("execution");
const MAX_WATCHED = 4;
const POLL_MS = 2000;
const MAX_LOG_LINES = 300;

// For the browser tests: every rendered event's seq per execution (in the order received) and every state change.
const hubDemo = (window.hubDemo = { events: {}, states: [], transport: null, errors: [], truncated: [], disconnects: [] });

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.setAttribute("class", v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function fmtMs(ms) {
  if (ms == null || !Number.isFinite(ms)) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}
function fmtBytes(n) { return n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1)} KiB`; }
function fmtClock(ts) {
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
function clip(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }

// Running durations tick on the hub's clock (event timestamps), not the browser's: the smallest
// (receive time - event timestamp) seen estimates the clock offset plus the minimal delivery delay.
let clockOffset = Infinity;
function noteTimestamp(ts) {
  const t = Date.parse(ts);
  if (Number.isFinite(t)) clockOffset = Math.min(clockOffset, Date.now() - t);
}
const hubNow = () => Date.now() - (Number.isFinite(clockOffset) ? clockOffset : 0);

// ---- one execution: its state and its card ---------------------------------------------------------------------

const NODE_W = 150, NODE_H = 58, COL_GAP = 30, ROW_GAP = 12, PAD = 10;
const ACCENTS = ["#7aa2ff", "#f0b35a", "#c08cff", "#4fd1c5", "#ff8fa3", "#a3d977"];
let accentIndex = 0;

class ExecutionView {
  constructor(workspace, execution, startedAt) {
    this.workspace = workspace;
    this.execution = execution;
    this.startedAt = startedAt ?? null;  // from /demo/executions, for ordering
    this.status = "waiting";             // waiting | running | completed | failed
    this.nodes = new Map();              // key -> node state
    this.accent = ACCENTS[accentIndex++ % ACCENTS.length];
    this.card = el("article", { class: "exec", "data-execution": execution, "data-status": "waiting", style: `--accent:${this.accent}` });
    this.titleEl = el("h3", { text: execution });
    this.workflowEl = el("span", { class: "workflow" });
    this.badge = el("span", { class: "badge", text: "waiting" });
    this.durationEl = el("span", { class: "duration" });
    this.progressEl = el("span", { class: "progress" });
    this.noteEl = el("p", { class: "note", hidden: "" });
    this.graph = el("div", { class: "graph" }, el("p", { class: "empty small", text: "waiting for execution.started…" }));
    this.card.append(
      el("header", {}, el("div", { class: "title" }, this.titleEl, this.workflowEl),
        el("div", { class: "summary" }, this.progressEl, this.durationEl, this.badge)),
      this.noteEl, this.graph);
    hubDemo.events[execution] ??= [];
  }

  get finished() { return this.status === "completed" || this.status === "failed"; }

  apply(ev) {
    hubDemo.events[this.execution].push(ev.seq);
    noteTimestamp(ev.timestamp);
    const t = Date.parse(ev.timestamp);
    const d = ev.data ?? {};
    const node = ev.node_key ? this.node(ev.node_key) : null;
    if (this.status === "waiting") this.status = "running";
    switch (ev.event) {
      case "execution.started":
        this.started = t;
        if (d.workflow) this.workflowEl.textContent = d.workflow;
        for (const n of d.nodes ?? []) this.node(n.key).deps = n.depends_on ?? [];
        this.layout();
        break;
      case "node.started":
        Object.assign(node, { status: "running", startedAt: t, attempt: d.attempt ?? null });
        break;
      case "node.completed":
        Object.assign(node, { status: d.status ?? "completed", duration: d.duration_ms, outputKeys: d.output_keys,
          outputSize: d.output_size_bytes, outputPreview: d.output_preview });
        break;
      case "node.failed":
        Object.assign(node, { status: "failed", duration: d.duration_ms ?? (node.startedAt ? t - node.startedAt : null), error: d.error });
        break;
      case "node.log":
        addLogLine(this, ev);
        break;
      case "execution.completed":
      case "execution.failed":
        this.status = ev.event === "execution.completed" ? "completed" : "failed";
        this.total = d.total_duration_ms;
        if (d.error) this.note(`${d.failed_node ? `failed at ${d.failed_node}: ` : ""}${d.error.message}${d.error.code ? ` (${d.error.code})` : ""}`, "error");
        // Nodes that never started will not run any more.
        for (const n of this.nodes.values()) if (n.status === "pending") n.status = "not-run";
        break;
    }
    if (node && !node.g) this.layout(); // a node execution.started did not list
    if (node) this.drawNode(node);
    else for (const n of this.nodes.values()) this.drawNode(n);
    this.drawHeader();
  }

  node(key) {
    let n = this.nodes.get(key);
    if (!n) { n = { key, deps: [], status: "pending" }; this.nodes.set(key, n); }
    return n;
  }

  note(text, kind = "") {
    this.noteEl.hidden = false;
    this.noteEl.className = `note ${kind}`;
    this.noteEl.textContent = text;
  }

  /** Columns by dependency depth (a node sits one column right of its deepest dependency). */
  layout() {
    const depth = new Map();
    const visit = (key, seen = new Set()) => {
      if (depth.has(key)) return depth.get(key);
      if (seen.has(key)) return 0; // a cycle: not a DAG, draw it anyway
      seen.add(key);
      const deps = (this.nodes.get(key)?.deps ?? []).filter((k) => this.nodes.has(k));
      const dv = deps.length ? 1 + Math.max(...deps.map((k) => visit(k, seen))) : 0;
      depth.set(key, dv);
      return dv;
    };
    const columns = [];
    for (const key of this.nodes.keys()) (columns[visit(key)] ??= []).push(key);
    const rows = Math.max(1, ...columns.map((c) => c?.length ?? 0));
    const width = PAD * 2 + columns.length * NODE_W + (columns.length - 1) * COL_GAP;
    const height = PAD * 2 + rows * NODE_H + (rows - 1) * ROW_GAP;
    const pos = new Map();
    columns.forEach((keys = [], col) => {
      const top = PAD + ((rows - keys.length) * (NODE_H + ROW_GAP)) / 2; // centre short columns
      keys.forEach((key, row) => pos.set(key, { x: PAD + col * (NODE_W + COL_GAP), y: top + row * (NODE_H + ROW_GAP) }));
    });
    const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `graph of ${this.execution}` });
    svg.style.maxWidth = `${width * 1.25}px`;
    svg.style.aspectRatio = `${width} / ${height}`; // so grid tracks know its height before layout
    const edges = el("svg:g", { class: "edges" });
    for (const n of this.nodes.values()) {
      const to = pos.get(n.key);
      for (const dep of n.deps) {
        const from = pos.get(dep);
        if (!from) continue;
        const x1 = from.x + NODE_W, y1 = from.y + NODE_H / 2, x2 = to.x, y2 = to.y + NODE_H / 2, mx = (x1 + x2) / 2;
        edges.append(el("svg:path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, "data-from": dep, "data-to": n.key }));
      }
    }
    svg.append(edges);
    for (const n of this.nodes.values()) {
      const { x, y } = pos.get(n.key);
      n.g = el("svg:g", { class: "node", "data-node": n.key, transform: `translate(${x},${y})` },
        el("svg:title"),
        el("svg:rect", { width: NODE_W, height: NODE_H, rx: 8 }),
        el("svg:circle", { class: "dot", cx: 13, cy: 14, r: 4 }),
        el("svg:text", { class: "name", x: 23, y: 18, text: clip(n.key, 17) }),
        el("svg:text", { class: "meta", x: 10, y: 35 }),
        el("svg:text", { class: "out", x: 10, y: 50 }));
      svg.append(n.g);
    }
    this.edges = edges;
    this.graph.replaceChildren(svg);
    for (const n of this.nodes.values()) this.drawNode(n);
  }

  drawNode(n) {
    if (!n.g) return;
    n.g.setAttribute("data-status", n.status);
    const [title, , , , meta, out] = n.g.childNodes;
    let metaText = n.status.replace("-", " "), outText = "", tip = `${n.key}: ${metaText}`;
    if (n.status === "running") {
      metaText = `running ${fmtMs(Math.max(0, hubNow() - n.startedAt))}`;
      if (n.attempt > 1) metaText += ` · try ${n.attempt}`;
    } else if (n.status === "completed" || n.status === "skipped") {
      metaText = `${n.status === "skipped" ? "skipped" : "✓"} ${fmtMs(n.duration)}`;
      if (n.outputKeys) {
        const keys = n.outputKeys.length ? n.outputKeys.join(", ") : "(not an object)";
        metaText += ` · ${fmtBytes(n.outputSize)}`;
        outText = clip(keys, 22);
        tip += `\noutput keys: ${keys}\noutput size: ${fmtBytes(n.outputSize)}\n${n.outputPreview ?? ""}`;
      }
    } else if (n.status === "failed") {
      metaText = `✗ failed${n.duration != null ? " · " + fmtMs(n.duration) : ""}`;
      outText = clip(n.error?.code ?? n.error?.message ?? "", 22);
      tip += `\n${n.error?.message ?? ""}${n.error?.code ? ` (${n.error.code})` : ""}`;
    }
    meta.textContent = metaText;
    out.textContent = outText;
    title.textContent = tip;
    // An edge is "done" once its source finished, "active" while its target runs.
    for (const p of this.edges?.querySelectorAll(`[data-to="${CSS.escape(n.key)}"]`) ?? []) p.setAttribute("data-target", n.status);
    for (const p of this.edges?.querySelectorAll(`[data-from="${CSS.escape(n.key)}"]`) ?? []) p.setAttribute("data-source", n.status);
  }

  drawHeader() {
    this.card.setAttribute("data-status", this.status);
    this.badge.textContent = this.status;
    const nodes = [...this.nodes.values()];
    const done = nodes.filter((n) => ["completed", "skipped", "failed"].includes(n.status)).length;
    this.progressEl.textContent = nodes.length ? `${done}/${nodes.length} nodes` : "";
    this.durationEl.textContent = this.finished ? fmtMs(this.total) : this.started ? fmtMs(Math.max(0, hubNow() - this.started)) : "";
  }

  /** Called ten times a second: running nodes and the execution's duration count up. */
  tick() {
    if (this.finished && ![...this.nodes.values()].some((n) => n.status === "running")) return;
    for (const n of this.nodes.values()) if (n.status === "running") this.drawNode(n);
    this.drawHeader();
  }
}

// ---- the log pane ------------------------------------------------------------------------------------------------

let logCount = 0;
function addLogLine(view, ev) {
  const level = ev.data?.level ?? "info";
  const li = el("li", { "data-level": level, style: `--accent:${view.accent}` },
    el("time", { text: fmtClock(ev.timestamp) }),
    el("span", { class: "exec-chip", text: view.execution }),
    el("span", { class: "node-key", text: ev.node_key ?? "" }),
    el("span", { class: "level", text: level }),
    el("span", { class: "message", text: ev.data?.message ?? "" }));
  const log = $("log");
  log.prepend(li); // newest first: no scrolling needed to follow
  while (log.childElementCount > MAX_LOG_LINES) log.lastElementChild.remove();
  $("log-count").textContent = `${++logCount} lines`;
}

// ---- the connection ----------------------------------------------------------------------------------------------

let eventCount = 0, reconnects = 0;
function showState({ state, transport }) {
  hubDemo.states.push(state);
  hubDemo.transport = transport;
  if (state === "reconnecting") reconnects++;
  const conn = $("conn");
  conn.dataset.state = state;
  conn.dataset.transport = transport;
  const words = { connecting: "connecting", open: "connected", reconnecting: "reconnecting", closed: "disconnected" };
  $("conn-text").textContent = `${words[state] ?? state} · ${transport}`;
  showStats();
}
function showStats() {
  $("conn-stats").textContent = `${eventCount} events${reconnects ? ` · ${reconnects} reconnect${reconnects > 1 ? "s" : ""}` : ""}`;
}
function banner(text) {
  const b = $("banner");
  b.hidden = !text;
  b.textContent = text ?? "";
}

// ---- which executions to watch -----------------------------------------------------------------------------------

const views = new Map(); // execution -> {view, sub}
const seen = new Set();   // every execution listed so far: watched once at most, never again after eviction
let client, workspace;

function watch(execution, startedAt) {
  const view = new ExecutionView(workspace, execution, startedAt);
  // since=0: the whole history, so a graph that appears mid-run is complete.
  const sub = client.subscribe(workspace, execution, { since: 0 });
  sub.on("event", (ev) => { eventCount++; view.apply(ev); showStats(); });
  sub.on("truncated", (t) => {
    hubDemo.truncated.push(t);
    view.note(`history truncated: events ${t.since + 1}–${t.first_seq - 1} are no longer kept`, "warning");
  });
  sub.on("error", (e) => view.note(`${e.code}: ${e.message}`, "error"));
  views.set(execution, { view, sub });
  placeCards();
}

function unwatch(execution) {
  const w = views.get(execution);
  if (!w) return;
  w.sub.unsubscribe();
  w.view.card.remove();
  views.delete(execution);
}

/** Newest first: a new round appears at the top left. */
function placeCards() {
  const list = [...views.values()].map((w) => w.view)
    .sort((a, b) => (b.startedAt ?? "").localeCompare(a.startedAt ?? "") || b.execution.localeCompare(a.execution));
  $("empty").hidden = list.length > 0;
  const section = $("executions");
  list.forEach((v, i) => { if (section.children[i + 1] !== v.card) section.insertBefore(v.card, section.children[i + 1] ?? null); });
}

/** Keeps the newest executions in view without dropping one that is still running: a new execution takes the
 *  place of the oldest finished one, or waits for one to finish. Older executions listed at the first poll (beyond
 *  the first four) and evicted ones are not shown again. */
function choose(executions, first) {
  for (const item of executions) { // newest first
    if (seen.has(item.execution)) continue;
    if (views.size >= MAX_WATCHED) {
      const victim = [...views.values()].map((w) => w.view)
        .filter((v) => v.finished && (v.startedAt ?? "") < item.started_at)
        .sort((a, b) => (a.startedAt ?? "").localeCompare(b.startedAt ?? ""))[0];
      if (!victim) break;
      unwatch(victim.execution);
    }
    seen.add(item.execution);
    watch(item.execution, item.started_at);
  }
  if (first) for (const item of executions) seen.add(item.execution);
}

let polled = false;
async function poll() {
  try {
    const r = await fetch("/demo/executions", { cache: "no-store" });
    if (!r.ok) throw new Error(`GET /demo/executions: ${r.status}`);
    const { executions } = await r.json();
    choose(executions.filter((e) => e.workspace === workspace), !polled);
    polled = true;
    banner(null);
  } catch (err) {
    banner(`Cannot list executions: ${err.message}`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

async function session() {
  const r = await fetch("/demo/session", { cache: "no-store" });
  if (!r.ok) throw new Error(`GET /demo/session: ${r.status}`);
  return r.json();
}

async function main() {
  let first;
  try { first = await session(); } catch (err) {
    banner(`${err.message}. Is the hub running with --demo?`);
    setTimeout(main, 3000);
    return;
  }
  workspace = params.get("workspace") ?? first.workspace;
  // The first token is used once; every later connection (or refresh) asks the hub for a fresh one.
  let pending = first.token;
  client = new HubClient({
    transport: params.get("transport") ?? "auto",
    getToken: async () => { if (pending) { const t = pending; pending = null; return t; } return (await session()).token; },
  });
  client.on("state", showState);
  client.on("error", (e) => { hubDemo.errors.push(e); console.warn("hub:", e); });
  client.on("disconnect", (d) => hubDemo.disconnects.push(d));
  client.connect();
  if (ONLY) watch(ONLY, null);
  else poll();
  setInterval(() => { for (const { view } of views.values()) view.tick(); }, 100);
}

main();
