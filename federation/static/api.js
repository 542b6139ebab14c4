// The federation's HTTP API as the dashboard uses it (docs/http-api.md): JSON listings with a
// bearer token, and statements run over the query WebSocket (/v1/query/ws, token as
// ?access_token=) or, where a WebSocket cannot be opened, POST /v1/query streaming NDJSON.
"use strict";

const TOKEN_KEY = "streamql.token";
const TRANSPORT_KEY = "streamql.transport";  // "http" to run statements with POST /v1/query only
export const REQUEST_TIMEOUT_MS = 8000;

export class ApiError extends Error {
  constructor(status, error) {
    super(error && error.message ? error.message : `HTTP ${status}`);
    this.status = status;
    this.kind = (error && error.kind) || (status ? "HTTP " + status : "ConnectionError");
    this.line = error ? error.line : null;
    this.column = error ? error.column : null;
  }
  get info() {
    return { kind: this.kind, message: this.message, line: this.line, column: this.column };
  }
}

export class Api {
  constructor() {
    this.token = localStorage.getItem(TOKEN_KEY) || "";
    this.listeners = new Set();
    this.socket = null;
  }

  setToken(token) {
    token = (token || "").trim();
    if (token === this.token) return;
    this.token = token;
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
    if (this.socket) { this.socket.close(); this.socket = null; }
    for (const fn of this.listeners) fn(token);
  }

  onToken(fn) { this.listeners.add(fn); }

  headers(extra) {
    return { Authorization: "Bearer " + this.token, ...extra };
  }

  /** A JSON request; a federation that does not answer within `timeout` ms is an error (a hung
   * federation must be noticed, not waited for). */
  async request(method, path, { body, signal, timeout = REQUEST_TIMEOUT_MS } = {}) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort("timeout"), timeout);
    if (signal) signal.addEventListener("abort", () => controller.abort("cancelled"));
    let resp;
    try {
      const headers = this.headers({ Accept: "application/json", ...(body !== undefined ? { "Content-Type": "application/json" } : {}) });
      resp = await fetch(path, { method, headers, signal: controller.signal, cache: "no-store",
                                 body: body !== undefined ? JSON.stringify(body) : undefined });
    } catch (err) {
      clearTimeout(timer);
      if (signal && signal.aborted) throw err;
      if (controller.signal.aborted) {
        throw new ApiError(0, { kind: "Timeout", message: `the federation did not answer within ${timeout / 1000} s` });
      }
      throw new ApiError(0, { kind: "ConnectionError", message: "the federation cannot be reached" });
    }
    let data = null;
    try { data = await resp.json(); } catch { /* not JSON */ } finally { clearTimeout(timer); }
    if (!resp.ok) throw new ApiError(resp.status, data && data.error);
    this.bytes = (this.bytes || 0) + Number(resp.headers.get("Content-Length") || 0);
    return data;
  }

  /** A file as the body (a model bundle). */
  async upload(path, file) {
    let resp;
    try {
      resp = await fetch(path, { method: "POST", body: file, cache: "no-store",
                                 headers: this.headers({ "Content-Type": "application/octet-stream", Accept: "application/json" }) });
    } catch {
      throw new ApiError(0, { kind: "ConnectionError", message: "the federation cannot be reached" });
    }
    let data = null;
    try { data = await resp.json(); } catch { /* not JSON */ }
    if (!resp.ok) throw new ApiError(resp.status, data && data.error);
    return data;
  }

  get(path, options) { return this.request("GET", path, options); }
  post(path, body, options) { return this.request("POST", path, { ...options, body: body ?? {} }); }
  put(path, body, options) { return this.request("PUT", path, { ...options, body }); }
  delete(path, options) { return this.request("DELETE", path, options); }

  /** Runs one statement; `on` gets columns, rows, end, error, cancelled. Returns {stop()}. */
  query(text, on, { transport = localStorage.getItem(TRANSPORT_KEY) || "auto" } = {}) {
    if (transport === "http" || typeof WebSocket === "undefined") return httpQuery(this, text, on);
    const socket = this.socket || (this.socket = new QuerySocket(this));
    if (transport === "auto" && socket.failed) return httpQuery(this, text, on);
    return socket.run(text, on, () => httpQuery(this, text, on));
  }
}

// --- the WebSocket: one per token, opened on the first statement, statements multiplexed by id ---
class QuerySocket {
  constructor(api) {
    this.api = api;
    this.ws = null;
    this.opened = null;   // a promise of the open socket
    this.failed = false;  // could never open: use HTTP for this page
    this.running = new Map();
    this.counter = 0;
  }

  open() {
    if (this.opened) return this.opened;
    const url = new URL("/v1/query/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("access_token", this.api.token);
    this.opened = new Promise((resolve, reject) => {
      let ws;
      try { ws = new WebSocket(url.href); } catch (err) { reject(err); return; }
      let isOpen = false;
      ws.onopen = () => { isOpen = true; this.ws = ws; resolve(ws); };
      ws.onmessage = (event) => this.receive(event.data);
      ws.onerror = () => { if (!isOpen) reject(new Error("the query WebSocket could not be opened")); };
      ws.onclose = (event) => {
        this.ws = null;
        this.opened = null;
        if (!isOpen) { reject(new Error("the query WebSocket was refused")); return; }
        const lost = [...this.running.values()];
        this.running.clear();
        for (const q of lost) {
          q.on.error({ kind: "ConnectionError", message: "the connection to the federation closed" +
                       (event.reason ? ": " + event.reason : "") + " — the statement was cancelled",
                       line: null, column: null }, null);
        }
      };
    });
    return this.opened;
  }

  run(text, on, fallback) {
    const id = "q" + (++this.counter);
    const q = { id, on, stopped: false, fallback: null };
    const handle = {
      stop: () => {
        if (q.fallback) { q.fallback.stop(); return; }
        q.stopped = true;
        if (this.ws && this.running.has(id)) {
          this.send({ type: "cancel", id });
          // a statement cancelled while it is still being planned is not answered: let it go
          setTimeout(() => { if (this.running.get(id) === q) { this.running.delete(id); on.cancelled(null); } }, 4000);
        }
      },
    };
    this.open().then(() => {
      this.running.set(id, q);
      if (q.stopped) { this.running.delete(id); on.cancelled(null); return; }
      this.send({ type: "query", id, query: text });
    }, () => {
      // No WebSocket (a proxy that does not pass them, or a refused token): plain HTTP, which
      // also tells a bad token apart with a proper error.
      this.failed = true;
      this.opened = null;
      if (q.stopped) { on.cancelled(null); return; }
      q.fallback = fallback();
    });
    return handle;
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  receive(data) {
    let m;
    try { m = JSON.parse(data); } catch { return; }
    const q = m.id != null ? this.running.get(m.id) : null;
    if (!q) return;
    switch (m.type) {
      case "columns":
        q.on.columns({ columns: m.columns, types: m.types, kind: m.kind, deployment_id: m.deployment_id });
        break;
      case "rows":
        q.on.rows(m.rows);
        break;
      case "end":
        this.running.delete(m.id);
        q.on.end(m);
        break;
      case "cancelled":
        this.running.delete(m.id);
        q.on.cancelled(m);
        break;
      case "error":
        this.running.delete(m.id);
        q.on.error(m.error, m.status ? m : null);
        break;
    }
  }

  close() {
    if (this.ws) this.ws.close(1000, "token changed");
  }
}

// --- POST /v1/query, NDJSON read as it arrives -------------------------------------------------
function httpQuery(api, text, on) {
  const controller = new AbortController();
  let stopped = false;
  (async () => {
    let resp;
    try {
      resp = await fetch("/v1/query", {
        method: "POST", signal: controller.signal, cache: "no-store",
        headers: api.headers({ "Content-Type": "application/json", Accept: "application/x-ndjson" }),
        body: JSON.stringify({ query: text }),
      });
    } catch (err) {
      if (stopped) on.cancelled(null);
      else on.error({ kind: "ConnectionError", message: "the federation cannot be reached", line: null, column: null }, null);
      return;
    }
    if (!resp.ok) {
      let body = null;
      try { body = await resp.json(); } catch { /* not JSON */ }
      on.error(new ApiError(resp.status, body && body.error).info, null);
      return;
    }
    const header = (name) => { try { return JSON.parse(resp.headers.get(name) || "null"); } catch { return null; } };
    on.columns({ columns: header("X-StreamQL-Columns") || [], types: header("X-StreamQL-Types") || [],
                 kind: resp.headers.get("X-StreamQL-Kind") || "bag",
                 deployment_id: resp.headers.get("X-StreamQL-Deployment") || undefined });
    const reader = resp.body.getReader(), decoder = new TextDecoder();
    let buffered = "", last = null;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += decoder.decode(value, { stream: true });
        const lines = buffered.split("\n");
        buffered = lines.pop();
        const rows = [];
        for (const line of lines) {
          if (!line.trim()) continue;
          const item = JSON.parse(line);
          if (Array.isArray(item)) rows.push(item);
          else last = item;
        }
        if (rows.length) on.rows(rows);
      }
      if (buffered.trim()) {
        const item = JSON.parse(buffered);
        if (Array.isArray(item)) on.rows([item]); else last = item;
      }
    } catch (err) {
      if (stopped || err.name === "AbortError") { on.cancelled(null); return; }
      on.error({ kind: "ConnectionError", message: "the result was cut: " + err.message, line: null, column: null }, null);
      return;
    }
    if (last && last.error) on.error(last.error, last);
    else if (last) on.end(last);
    else if (stopped) on.cancelled(null);
    else on.error({ kind: "ConnectionError", message: "the result was cut (no final status line): the connection broke",
                    line: null, column: null }, null);
  })();
  return { stop: () => { stopped = true; controller.abort(); } };
}
