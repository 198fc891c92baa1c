// The mc dashboard: live over server-sent events from the master (GET /v1/events),
// charts of the last 15 minutes drawn on <canvas> (history from GET /v1/stats/history),
// tables of workers, chat sessions, a presence lookup and the admin actions.
// Nothing is fetched from anywhere but this master.

const HISTORY_SECONDS = 900;
const KEY_STORE = "mc.apiKey";
const COLORS = ["#2f7ed8", "#e8743b", "#1a8f4c", "#8e44ad", "#c0392b", "#16a085", "#d35400", "#7f8c8d"];

/** @type {{ts: number, connections: number, msgs_in_per_s: number, msgs_out_per_s: number, sessions: number, workers: Record<string, any>}[]} */
const samples = [];
let lastSnapshot = null;
let events = 0;
const $ = (id) => document.getElementById(id);

// state the tests (and a curious admin) can read from the console
window.mcDashboard = { samples, get snapshot() { return lastSnapshot; }, get events() { return events; } };

function apiKey() { return sessionStorage.getItem(KEY_STORE); }

/** fetch with the API key as a Bearer header (never in the URL). */
async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  if (init.body !== undefined) headers.set("Content-Type", "application/json");
  const r = await fetch(path, { ...init, headers });
  let body = null;
  try { body = await r.json(); } catch { /* no body */ }
  if (r.status === 401) showLogin(true);
  if (!r.ok) throw new Error(body && body.reason ? `${r.status} ${body.error}: ${body.reason}` : `HTTP ${r.status}`);
  return body;
}

function say(text) { $("message").textContent = text; }

// ------------------------------------------------------------------ login

function showLogin(keysOn) {
  const form = $("login");
  form.hidden = !keysOn;
  $("logout").hidden = !apiKey();
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem(KEY_STORE, key);
  $("api-key").value = "";
  showLogin(true);
  say("");
  loadHistory();
  restartEvents();
});
$("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); showLogin(true); });

// ------------------------------------------------------------------ charts

/**
 * Draw line series on a canvas: values are per-second samples, newest last,
 * over a fixed 15-minute window (x: time, y: 0..max).
 */
function drawChart(canvas, series, legendEl) {
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || canvas.width, cssH = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(cssW * dpr)) { canvas.width = Math.round(cssW * dpr); canvas.height = Math.round(cssH * dpr); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const left = 44, right = 8, top = 8, bottom = 20;
  const w = cssW - left - right, h = cssH - top - bottom;
  let max = 0;
  for (const s of series) for (const v of s.values) if (v > max) max = v;
  max = niceMax(max);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7682";
  ctx.strokeStyle = "#e3e7ec";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + h - (h * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y + 0.5); ctx.lineTo(left + w, y + 0.5); ctx.stroke();
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    ctx.fillText(fmt((max * i) / 4), left - 6, y);
  }
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const m of [15, 10, 5, 0]) {
    const x = left + w - (w * m * 60) / HISTORY_SECONDS;
    ctx.fillText(m ? `-${m} min` : "now", Math.min(x, left + w - 12), top + h + 5);
  }
  for (const s of series) {
    const n = s.values.length;
    if (!n) continue;
    ctx.strokeStyle = s.color; ctx.lineWidth = 1.6;
    ctx.setLineDash(s.dash || []);
    ctx.beginPath();
    s.values.forEach((v, i) => {
      const x = left + w - (w * (n - 1 - i)) / (HISTORY_SECONDS - 1);
      const y = top + h - (max ? (h * v) / max : 0);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  ctx.setLineDash([]);
  if (legendEl) {
    legendEl.replaceChildren(...series.map((s) => {
      const span = document.createElement("span");
      const dot = document.createElement("i"); dot.style.background = s.color;
      span.append(dot, `${s.label} ${fmt(s.values.length ? s.values[s.values.length - 1] : 0)}`);
      return span;
    }));
  }
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return Number.isInteger(v) ? String(v) : String(+v.toFixed(v < 10 ? 2 : 0));
}

function workerIds() {
  const ids = new Set();
  for (const s of samples) for (const id of Object.keys(s.workers || {})) ids.add(id);
  return [...ids].sort();
}

function drawCharts() {
  const ids = workerIds();
  const color = (id) => COLORS[ids.indexOf(id) % COLORS.length];
  const perWorker = ids.map((id) => ({ label: id, color: color(id),
    values: samples.map((s) => (s.workers[id] ? s.workers[id].connections : 0)) }));
  drawChart($("chart-connections"), [
    { label: "cluster", color: "#1d232b", values: samples.map((s) => s.connections) }, ...perWorker,
  ], $("legend-connections"));
  drawChart($("chart-messages"), [
    { label: "in", color: COLORS[0], values: samples.map((s) => s.msgs_in_per_s) },
    { label: "out", color: COLORS[1], dash: [5, 3], values: samples.map((s) => s.msgs_out_per_s) },
  ], $("legend-messages"));
  for (const canvas of document.querySelectorAll("canvas.spark")) {
    const id = canvas.dataset.worker;
    drawSpark(canvas, samples.map((s) => (s.workers[id] ? s.workers[id].connections : 0)),
      samples.map((s) => (s.workers[id] ? s.workers[id].msgs_in_per_s + s.workers[id].msgs_out_per_s : 0)), color(id));
  }
}

function drawSpark(canvas, conns, msgs, color) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  for (const [values, stroke] of [[msgs, "#e8743b"], [conns, color]]) {
    const max = Math.max(1, ...values);
    ctx.strokeStyle = stroke; ctx.lineWidth = 1.2;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = w - ((values.length - 1 - i) * w) / (HISTORY_SECONDS - 1);
      const y = h - 1 - ((h - 2) * v) / max;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

// ------------------------------------------------------------------ tables

function td(text, cls) {
  const el = document.createElement("td");
  if (text instanceof Node) el.append(text); else el.textContent = text;
  if (cls) el.className = cls;
  return el;
}

function uptime(s) {
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

function loadBar(w) {
  const share = w.capacity ? Math.min(1, w.connections / w.capacity) : 0;
  const wrap = document.createElement("span");
  const bar = document.createElement("span"); bar.className = "bar";
  const fill = document.createElement("span"); fill.style.width = `${(share * 100).toFixed(1)}%`;
  bar.append(fill);
  wrap.append(bar, `${(share * 100).toFixed(share < 0.1 ? 1 : 0)}%`);
  return wrap;
}

function renderWorkers(snap) {
  const body = $("workers").tBodies[0];
  const rows = snap.workers.map((w) => {
    const tr = document.createElement("tr");
    tr.dataset.worker = w.id;
    tr.className = w.state;
    const spark = document.createElement("canvas");
    spark.className = "spark"; spark.width = 160; spark.height = 26; spark.dataset.worker = w.id;
    const action = document.createElement("button");
    action.type = "button";
    action.className = w.state === "up" ? "drain" : "undrain";
    action.textContent = w.state === "up" ? "drain" : "undrain";
    action.dataset.worker = w.id;
    action.addEventListener("click", () => drain(w.id, w.state === "up"));
    tr.append(td(w.id), td(w.url, "text"), td(w.state, `state ${w.state}`), td(uptime(w.uptime_s)), td(loadBar(w)),
      td(`${w.connections} / ${w.capacity}`), td(w.sessions), td(fmt(w.msgs_in_per_s)), td(fmt(w.msgs_out_per_s)),
      td(w.cpu_percent.toFixed(1)), td((w.rss_bytes / 1048576).toFixed(1)), td(spark), td(action));
    return tr;
  });
  body.replaceChildren(...rows);
  const t = snap.totals;
  $("totals").innerHTML = "";
  for (const [label, value] of [["workers", t.workers], ["draining", t.draining], ["connections", t.connections],
    ["sessions", t.sessions], ["subscriptions", t.subscriptions], ["in/s", fmt(t.msgs_in_per_s)],
    ["out/s", fmt(t.msgs_out_per_s)]]) {
    const b = document.createElement("b"); b.textContent = value;
    $("totals").append(b, ` ${label}  `);
  }
}

async function refreshSessions() {
  try {
    const s = await api("/v1/sessions");
    $("sessions-count").textContent = s.truncated ? `${s.sessions.length} of ${s.total}` : `${s.total}`;
    $("sessions").tBodies[0].replaceChildren(...s.sessions.map((x) => {
      const tr = document.createElement("tr");
      tr.append(td(x.session), td(x.worker, "text"), td(x.members));
      return tr;
    }));
  } catch (err) { say(`sessions: ${err.message}`); }
}

// ------------------------------------------------------------------ actions

async function drain(id, on) {
  try {
    await api(`/v1/workers/${encodeURIComponent(id)}/drain`, { method: on ? "POST" : "DELETE" });
    say("");
  } catch (err) { say(`${on ? "drain" : "undrain"} ${id}: ${err.message}`); }
}

$("rebalance").addEventListener("click", async () => {
  try {
    const r = await api("/v1/rebalance", { method: "POST" });
    const shed = Object.entries(r.shedding || {}).map(([w, n]) => `${w}: ${n}`).join(", ");
    say(shed ? `rebalancing: ${shed}` : "nothing to rebalance");
  } catch (err) { say(`rebalance: ${err.message}`); }
});

$("presence").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const client = $("presence-client").value.trim();
  try {
    const r = await api(`/v1/clients/${encodeURIComponent(client)}`);
    $("presence-result").textContent = r.online
      ? `${client} is online: ${r.connections.map((c) => `${c.device} on ${c.worker}`).join(", ")}`
      : `${client} is offline`;
  } catch (err) { $("presence-result").textContent = err.message; }
});

$("notify").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const kind = $("notify-kind").value, to = $("notify-to").value.trim();
  let data;
  try { data = JSON.parse($("notify-data").value); } catch { $("notify-result").textContent = "data must be JSON"; return; }
  const target = kind === "client" ? { client: to }
    : kind === "tags" ? { tags: to.split(",").map((t) => t.trim()).filter(Boolean) } : {};
  try {
    const r = await api("/v1/notify", { method: "POST", body: JSON.stringify({ to: target, data }) });
    $("notify-result").textContent = `delivered to ${r.delivered} connection(s)`;
  } catch (err) { $("notify-result").textContent = err.message; }
});

// ------------------------------------------------------------------ live data

function onSnapshot(snap) {
  events++;
  lastSnapshot = snap;
  showLogin(!!snap.keys);
  if (snap.sample && (!samples.length || snap.sample.ts > samples[samples.length - 1].ts)) {
    samples.push(snap.sample);
    if (samples.length > HISTORY_SECONDS) samples.splice(0, samples.length - HISTORY_SECONDS);
  }
  renderWorkers(snap);
  drawCharts();
  if (events % 5 === 1) refreshSessions();
}

let stream = null;

/** Read GET /v1/events (server-sent events) with fetch, so the API key can go in a header. */
async function readEvents(signal) {
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const r = await fetch("/v1/events", { headers, signal, cache: "no-store" });
  if (r.status === 401) {
    showLogin(true);
    throw new Error(apiKey() ? "the API key was refused" : "this master needs an API key: log in");
  }
  if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
  $("live").textContent = "live"; $("live").className = "pill on";
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end); buf = buf.slice(end + 2);
      let type = "message"; const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) type = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (type === "stats" && data.length) onSnapshot(JSON.parse(data.join("\n")));
    }
  }
}

async function loadHistory() {
  try {
    const h = await api(`/v1/stats/history?seconds=${HISTORY_SECONDS}`);
    const known = new Set(samples.map((s) => s.ts));
    samples.unshift(...h.samples.filter((s) => !known.has(s.ts) && (!samples.length || s.ts < samples[0].ts)));
    drawCharts();
  } catch (err) { say(`history: ${err.message}`); }
}

function restartEvents() {
  if (stream) stream.abort();
  stream = new AbortController();
  const { signal } = stream;
  (async () => {
    while (!signal.aborted) {
      try { await readEvents(signal); } catch (err) { if (!signal.aborted) say(`events: ${err.message}`); }
      if (signal.aborted) return;
      $("live").textContent = "offline"; $("live").className = "pill off";
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  })();
}

showLogin(false);
loadHistory();
restartEvents();
