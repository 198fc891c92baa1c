// mc.js: the JavaScript client of mc (PROTOCOL.md "Browsers"). One ES module,
// no build step, no dependencies; the master serves it at GET /mc.js.
//
//   import { connectApp, openChat } from "http://MASTER:7100/mc.js";
//   const app = await connectApp("http://MASTER:7100", { client: "alice" });
//   app.on("notify", (n) => console.log(n.data));
//   const chat = await openChat("http://MASTER:7100", "room-1", { client: "alice" });
//   chat.on("message", (m) => console.log(m.from, m.data));
//   chat.on("members", (list) => console.log(list));
//   await chat.send({ text: "hi" });
//
// Behaviour mirrors the Python SDK (mc/client): the handshake goes to the
// master with browser=1, `redirect` frames are followed (at most 5 hops), a
// refused handshake arrives as an `error` frame; after close codes 4008,
// 4029, 4503, 1001 or a lost connection (1006) the client reconnects through
// the master with exponential backoff and jitter, after the others (1000,
// 1002, 1007, 1009, 4000, 4001, 4009, 4400-4409) it stops. A browser cannot
// send WebSocket pings, so a `ping` frame goes out every heartbeat/2 seconds.
// With a `tokenProvider`, a fresh token is sent in a `refresh` frame about
// 30 s before the current one's `exp`.

/** Close codes after which the client stops for good (PROTOCOL.md "Closing"). */
export const STOP_CODES = new Set([1000, 1002, 1007, 1009, 4000, 4001, 4009]);
/** At most this many `redirect` frames are followed for one connection. */
export const MAX_HOPS = 5;
/** Seconds before a token's `exp` that a `refresh` is sent. */
export const REFRESH_BEFORE = 30;

/**
 * @typedef {object} Backoff
 * @property {number} [initial=0.2] first delay, seconds
 * @property {number} [maximum=5] largest delay, seconds
 * @property {number} [factor=2] growth per attempt
 * @property {number} [jitter=0.5] each delay is shortened by a random part of up to this share
 * @property {number} [stable=5] seconds a connection must live for the schedule to restart
 */

/**
 * @typedef {object} AppOptions
 * @property {string} client the client id (1-128 of A-Za-z0-9._-:@)
 * @property {string} [device] default "default"
 * @property {string[]} [tags]
 * @property {string} [token] a JWT, when the cluster checks them
 * @property {() => (string | Promise<string>)} [tokenProvider] called for each connection and before `exp`
 * @property {"json"} [codec] only "json" (text frames) in the browser client
 * @property {Backoff} [backoff]
 * @property {number} [timeout=10] seconds a request (or the first connection) may take
 */

/**
 * @typedef {AppOptions & {mode?: "open" | "join"}} ChatOptions
 */

/** An error from mc: a refused handshake, an `error` frame, a close code or a timeout. */
export class McError extends Error {
  /**
   * @param {string} code the protocol error code (bad_request, unauthorized, forbidden, not_found, ...)
   * @param {string} reason human text
   * @param {{status?: number, closeCode?: number, temporary?: boolean, retryAfter?: number, id?: string}} [extra]
   */
  constructor(code, reason, extra = {}) {
    super(`${code}: ${reason}`);
    this.name = "McError";
    /** @type {string} */ this.code = code;
    /** @type {string} */ this.reason = reason;
    /** @type {number | undefined} HTTP status of a refused handshake */ this.status = extra.status;
    /** @type {number | undefined} */ this.closeCode = extra.closeCode;
    /** @type {boolean} whether the client retries by itself */ this.temporary = !!extra.temporary;
    /** @type {number | undefined} */ this.retryAfter = extra.retryAfter;
    /** @type {string | undefined} */ this.id = extra.id;
  }
}

const CLOSE_ERRORS = /** @type {Record<number, string>} */ ({
  1000: "closed", 1002: "bad_request", 1007: "bad_request", 1009: "too_large", 4000: "bad_request",
  4001: "unauthorized", 4008: "idle", 4009: "replaced", 4029: "rate_limited", 4503: "unavailable",
});

/** Whether the client reconnects after close code `code`. @param {number} code */
export function reconnects(code) {
  if (STOP_CODES.has(code)) return false;
  if (code >= 4400 && code <= 4409) return false; // a refused handshake: as for its status
  return true;
}

/** The delay (seconds) before retry number `attempt`. @param {Backoff} b @param {number} attempt */
export function backoffDelay(b, attempt, rand = Math.random) {
  const initial = b.initial ?? 0.2, maximum = b.maximum ?? 5, factor = b.factor ?? 2, jitter = b.jitter ?? 0.5;
  const top = Math.min(maximum, initial * factor ** Math.min(attempt, 64));
  return top * (1 - jitter * rand());
}

/** The `exp` claim (seconds since the epoch) of a JWT, or undefined. @param {string} token */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.exp === "number" ? claims.exp : undefined;
  } catch {
    return undefined;
  }
}

/** ws:// or wss:// for a master URL given as http(s):// or ws(s)://. @param {string} url */
function wsBase(url) {
  return url.replace(/^http(s?):\/\//, "ws$1://").replace(/\/+$/, "");
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Emitter {
  constructor() { /** @type {Map<string, Set<Function>>} */ this._handlers = new Map(); }
  /**
   * Call `fn` for each event `name`; returns a function that removes it.
   * @param {string} name @param {(value: any) => void} fn @returns {() => void}
   */
  on(name, fn) {
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    /** @type {Set<Function>} */ (this._handlers.get(name)).add(fn);
    return () => this.off(name, fn);
  }
  /** @param {string} name @param {(value: any) => void} fn */
  off(name, fn) { this._handlers.get(name)?.delete(fn); }
  /** @param {string} name @param {any} [value] */
  emit(name, value) {
    for (const fn of [...(this._handlers.get(name) ?? [])]) {
      try { fn(value); } catch (err) { setTimeout(() => { throw err; }); }
    }
  }
}

/**
 * One logical connection that outlives reconnects (the Python SDK's Link).
 * Events: "open" (the welcome), "reconnecting" ({error, delay}), "close" (McError or
 * undefined after close()), "error" (McError: an `error` frame without a request,
 * or the failure that stopped the client), plus the endpoint's own events.
 */
class Link extends Emitter {
  /** @param {string} masterUrl @param {string} path @param {Record<string, string>} query @param {AppOptions} opts */
  constructor(masterUrl, path, query, opts) {
    super();
    if (opts.codec && opts.codec !== "json") throw new McError("bad_request", "the browser client speaks json only");
    this._base = wsBase(masterUrl);
    this._path = path;
    this._query = query;
    this._opts = opts;
    this._timeout = (opts.timeout ?? 10) * 1000;
    /** @type {WebSocket | null} */ this._ws = null;
    /** @type {Map<string, {resolve: Function, reject: Function, timer: any}>} */ this._pending = new Map();
    this._nextId = 1;
    this._stopped = false;
    /** @type {McError | null} */ this.failure = null;
    /** @type {any} */ this.welcome = null;
    /** @type {any[]} */ this._timers = [];
    /** @type {string | undefined} */ this._token = opts.token;
    this.ready = new Promise((resolve, reject) => { this._resolveReady = resolve; this._rejectReady = reject; });
    this.ready.catch(() => {}); // the caller sees it through connectApp/openChat
    this._readyTimer = setTimeout(() => {
      this._fail(new McError("unavailable", `no connection within ${this._timeout / 1000} s`, { temporary: true }));
    }, this._timeout);
    this._run();
  }

  /** The worker this client is connected to, or null. */
  get worker() { return this.welcome ? this.welcome.worker : null; }

  /** Whether a connection is open now. */
  get connected() { return this._ws !== null && this._ws.readyState === WebSocket.OPEN && this.welcome !== null; }

  async _entryUrl() {
    const query = { ...this._query, browser: "1" };
    if (this._opts.tokenProvider) this._token = await this._opts.tokenProvider();
    if (this._token) query.token = this._token;
    return `${this._base}${this._path}?${new URLSearchParams(query)}`;
  }

  /** Open one connection, following `redirect` frames; resolves with the socket after `welcome`. */
  async _connect() {
    let url = await this._entryUrl();
    for (let hop = 0; hop <= MAX_HOPS; hop++) {
      const { ws, frame } = await firstFrame(url);
      if (frame.type === "redirect") { url = frame.url; continue; }
      if (frame.type === "error") {
        ws.close();
        const status = frame.status;
        throw new McError(frame.code, frame.reason, {
          status, closeCode: 4000 + status, retryAfter: frame.retry_after,
          temporary: status === 503 || status === 429,
        });
      }
      if (frame.type !== "welcome") {
        ws.close(4000);
        throw new McError("bad_request", `expected welcome, got ${frame.type}`);
      }
      return { ws, welcome: frame };
    }
    throw new McError("bad_request", `more than ${MAX_HOPS} redirects`);
  }

  async _run() {
    const backoff = this._opts.backoff ?? {};
    let attempt = 0;
    while (!this._stopped) {
      let conn;
      try {
        conn = await this._connect();
      } catch (err) {
        const e = err instanceof McError ? err : new McError("unavailable", String(err), { temporary: true });
        if (!e.temporary) { this._fail(e); return; }
        if (this._stopped) return;
        const delay = Math.max(backoffDelay(backoff, attempt++), e.retryAfter ?? 0);
        this.emit("reconnecting", { error: e, delay });
        await sleep(delay * 1000);
        continue;
      }
      if (this._stopped) { conn.ws.close(1000); return; }
      const opened = Date.now();
      const ended = this._serve(conn.ws, conn.welcome);
      const { code, reason } = await ended;
      this._stopTimers();
      this._ws = null;
      this.welcome = null;
      const lost = new McError(CLOSE_ERRORS[code] ?? "unavailable", reason || `connection closed (${code})`,
        { closeCode: code, temporary: reconnects(code) });
      for (const [, p] of this._pending) { clearTimeout(p.timer); p.reject(lost); }
      this._pending.clear();
      if (this._stopped) return;
      if (!lost.temporary) { this._fail(lost); return; }
      if ((Date.now() - opened) / 1000 >= (backoff.stable ?? 5) || code === 4503) attempt = 0;
      const delay = code === 4503 && attempt === 0 ? 0 : backoffDelay(backoff, attempt);
      attempt++;
      this.emit("reconnecting", { error: lost, delay });
      await sleep(delay * 1000);
    }
  }

  /** Serve one open connection; resolves with its close code. @param {WebSocket} ws @param {any} welcome */
  _serve(ws, welcome) {
    this._ws = ws;
    this.welcome = welcome;
    const ended = new Promise((resolve) => {
      ws.onclose = (ev) => resolve({ code: ev.code, reason: ev.reason });
    });
    ws.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      this._frame(frame);
    };
    const heartbeat = Number(welcome.heartbeat) || 25;
    this._timers.push(setInterval(() => this._write({ type: "ping" }), (heartbeat * 1000) / 2));
    this._scheduleRefresh();
    this._onWelcome(welcome);
    this.emit("open", welcome);
    if (this._readyTimer !== null) { clearTimeout(this._readyTimer); this._readyTimer = null; }
    this._resolveReady(this);
    return ended;
  }

  _scheduleRefresh() {
    if (!this._opts.tokenProvider || !this._token) return;
    const exp = tokenExpiry(this._token);
    if (exp === undefined) return;
    const wait = Math.max(0, (exp - REFRESH_BEFORE) * 1000 - Date.now());
    this._timers.push(setTimeout(async () => {
      try {
        const token = await /** @type {Function} */ (this._opts.tokenProvider)();
        await this._request({ type: "refresh", token });
        this._token = token;
        this._scheduleRefresh();
      } catch (err) {
        this.emit("error", err);
      }
    }, Math.min(wait, 2 ** 31 - 1)));
  }

  _stopTimers() {
    for (const t of this._timers) { clearInterval(t); clearTimeout(t); }
    this._timers = [];
  }

  /** @param {any} frame */
  _frame(frame) {
    switch (frame.type) {
      case "ack": case "error": {
        const p = frame.id !== undefined ? this._pending.get(frame.id) : undefined;
        if (p) {
          this._pending.delete(frame.id);
          clearTimeout(p.timer);
          if (frame.type === "ack") p.resolve(frame);
          else p.reject(new McError(frame.code, frame.reason, { id: frame.id }));
        } else if (frame.type === "error") {
          this.emit("error", new McError(frame.code, frame.reason, { id: frame.id }));
        }
        return;
      }
      case "ping": this._write(frame.id !== undefined ? { type: "pong", id: frame.id } : { type: "pong" }); return;
      case "pong": return;
      default: this._onFrame(frame);
    }
  }

  /** @param {any} welcome */ _onWelcome(welcome) {} // eslint-disable-line no-unused-vars
  /** @param {any} frame */ _onFrame(frame) { this.emit("frame", frame); }

  /** @param {any} frame */
  _write(frame) {
    if (this._ws !== null && this._ws.readyState === WebSocket.OPEN) this._ws.send(JSON.stringify(frame));
  }

  /** Wait for the connection (within the timeout) once it is open. */
  async _open() {
    if (this.failure) throw this.failure;
    if (this.connected) return;
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => { off1(); off2(); reject(new McError("unavailable", "not connected", { temporary: true })); }, this._timeout);
      const off1 = this.on("open", () => { clearTimeout(timer); off1(); off2(); resolve(undefined); });
      const off2 = this.on("close", (err) => { clearTimeout(timer); off1(); off2(); reject(err ?? new McError("closed", "closed")); });
    });
  }

  /** Send a request frame with an `id`; resolves with its `ack`. @param {Record<string, any>} frame */
  async _request(frame) {
    await this._open();
    const id = `r${this._nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new McError("unavailable", `no answer within ${this._timeout / 1000} s`, { id, temporary: true }));
      }, this._timeout);
      this._pending.set(id, { resolve, reject, timer });
      this._write({ ...frame, id });
    });
  }

  /** @param {McError} err */
  _fail(err) {
    if (this._stopped) return;
    this._stopped = true;
    this.failure = err;
    if (this._readyTimer !== null) { clearTimeout(this._readyTimer); this._readyTimer = null; }
    this._stopTimers();
    if (this._ws) { try { this._ws.close(1000); } catch { /* already closing */ } }
    this._rejectReady(err);
    this.emit("error", err);
    this.emit("close", err);
  }

  /** Close for good (close code 1000); no reconnect. */
  close() {
    if (this._stopped) return;
    this._stopped = true;
    if (this._readyTimer !== null) { clearTimeout(this._readyTimer); this._readyTimer = null; }
    this._stopTimers();
    if (this._ws) this._ws.close(1000);
    this._rejectReady(new McError("closed", "closed by the client"));
    this.emit("close", undefined);
  }
}

/**
 * Open a socket and wait for its first frame (or its close).
 * @param {string} url @returns {Promise<{ws: WebSocket, frame: any}>}
 */
function firstFrame(url) {
  return new Promise((resolve, reject) => {
    let ws;
    try { ws = new WebSocket(url); } catch (err) {
      reject(new McError("bad_request", `bad URL ${url}: ${err}`));
      return;
    }
    ws.onmessage = (ev) => {
      ws.onmessage = null;
      ws.onclose = null;
      try { resolve({ ws, frame: JSON.parse(ev.data) }); } catch {
        ws.close(4000);
        reject(new McError("bad_request", "undecodable first frame"));
      }
    };
    ws.onclose = (ev) => {
      reject(new McError(CLOSE_ERRORS[ev.code] ?? "unavailable", ev.reason || `connection closed (${ev.code})`,
        { closeCode: ev.code, temporary: reconnects(ev.code) }));
    };
  });
}

/**
 * An app connection (/v1/app). Events: "notify" ({data, from, id, trace?}), plus Link's.
 */
export class App extends Link {
  /** @param {any} frame */
  _onFrame(frame) {
    if (frame.type === "notify") this.emit("notify", frame);
    else this.emit("frame", frame);
  }

  /**
   * Publish to a topic; resolves with the number of consumer connections it reached.
   * @param {string} topic @param {any} data @param {{key?: string, trace?: string}} [opts]
   */
  async publish(topic, data, opts = {}) {
    const frame = /** @type {Record<string, any>} */ ({ type: "publish", topic, data });
    if (opts.key !== undefined) frame.key = opts.key;
    if (opts.trace !== undefined) frame.trace = opts.trace;
    const ack = await this._request(frame);
    return ack.delivered;
  }
}

/**
 * A chat member (/v1/chat/{session}). Events: "message" ({from, data, seq, ts, trace?}),
 * "joined" (client id), "left" (client id), "members" (the list, after every change), plus Link's.
 */
export class Chat extends Link {
  /** @param {string} masterUrl @param {string} session @param {ChatOptions} opts */
  constructor(masterUrl, session, opts) {
    super(masterUrl, `/v1/chat/${encodeURIComponent(session)}`, { ...identity(opts), mode: opts.mode ?? "open" }, opts);
    /** @type {string} */ this.session = session;
    /** @type {string[]} the session's members (client ids, this one included) */ this.members = [];
  }

  /** @param {any} welcome */
  _onWelcome(welcome) {
    this.members = [...(welcome.members ?? [])];
    this.emit("members", [...this.members]);
  }

  /** @param {any} frame */
  _onFrame(frame) {
    if (frame.type === "chat") {
      this.emit("message", frame);
    } else if (frame.type === "joined") {
      if (!this.members.includes(frame.client)) this.members.push(frame.client);
      this.emit("joined", frame.client);
      this.emit("members", [...this.members]);
    } else if (frame.type === "left") {
      this.members = this.members.filter((m) => m !== frame.client);
      this.emit("left", frame.client);
      this.emit("members", [...this.members]);
    } else {
      this.emit("frame", frame);
    }
  }

  /**
   * Send to every other member; resolves with the message's `seq`.
   * @param {any} data @param {{trace?: string}} [opts]
   */
  async send(data, opts = {}) {
    const frame = /** @type {Record<string, any>} */ ({ type: "send", data });
    if (opts.trace !== undefined) frame.trace = opts.trace;
    const ack = await this._request(frame);
    return ack.seq;
  }
}

/** @param {AppOptions} opts @returns {Record<string, string>} */
function identity(opts) {
  if (!opts || !opts.client) throw new McError("bad_request", "client is required");
  const q = /** @type {Record<string, string>} */ ({ client: opts.client });
  if (opts.device) q.device = opts.device;
  if (opts.tags && opts.tags.length) q.tags = opts.tags.join(",");
  return q;
}

/**
 * Connect an app through the master; resolves once the first `welcome` arrived,
 * rejects with an McError (with `code` and `status`) when the handshake is refused.
 * @param {string} masterUrl e.g. "http://localhost:7100"
 * @param {AppOptions} opts
 * @returns {Promise<App>}
 */
export function connectApp(masterUrl, opts) {
  try {
    return new App(masterUrl, "/v1/app", identity(opts), opts).ready;
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * Open (or, with mode "join", only join) a chat session through the master.
 * @param {string} masterUrl @param {string} session @param {ChatOptions} opts
 * @returns {Promise<Chat>}
 */
export function openChat(masterUrl, session, opts) {
  try {
    return new Chat(masterUrl, session, opts).ready;
  } catch (err) {
    return Promise.reject(err);
  }
}
