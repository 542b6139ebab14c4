// Devices: a fleet view answered by the server (GET /v1/edges: filtered, sorted, 50 a page,
// compact rows), refreshed with `since=<cursor>` so a refresh carries only the rows that changed.
// The filters live in the address (#devices?status=online&where=…&sort=-battery&page=2) so a view
// can be shared; a device's details (GET /v1/edges/{id}) open beside the table, or as a
// full-screen sheet on a narrow screen.
"use strict";

import { $, ago, clear, dateTime, duration, h, isNumber, kb, keepFocus, num, plural, quote, whenIdle } from "./util.js";

export const PAGE_SIZE = 50;
const DEBOUNCE_MS = 40;
const FILTER_KEYS = ["q", "status", "where", "meta.region", "meta.kind", "attention", "model", "version",
                     "battery_below", "cpu_above", "memory_above", "missing_after"];
const ATTENTION = ["low battery", "errors", "restarts", "buffer drops", "dropped link"];

export function batteryOf(health) {
  const b = health && health.battery;
  if (isNumber(b)) return b;
  return b && isNumber(b.percent) ? b.percent : null;
}

function metaText(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function bar(value, { max = 100, cls = "" } = {}) {
  const fraction = isNumber(value) ? Math.max(0, Math.min(1, value / max)) : 0;
  const fill = h("span", { class: "bar-fill " + cls });
  fill.style.width = (fraction * 100).toFixed(1) + "%";
  return h("span", { class: "bar", "aria-hidden": "true" }, fill);
}

// the columns; `sort` is the server's sort key
const COLUMNS = [
  { key: "status", label: "", title: "status", sort: "status" },
  { key: "id", label: "device", sort: "id" },
  { key: "region", label: "region", sort: "meta.region" },
  { key: "kind", label: "kind", sort: "meta.kind" },
  { key: "cpu", label: "CPU", num: true, sort: "cpu" },
  { key: "memory", label: "memory", num: true, sort: "memory" },
  { key: "battery", label: "battery", num: true, sort: "battery" },
  { key: "uptime", label: "uptime", num: true, sort: "uptime" },
  { key: "seen", label: "last seen", sort: "last_seen" },
  { key: "models", label: "models" },
  { key: "attention", label: "attention", sort: "attention" },
];

/** The devices view's state as the address holds it: `#devices?status=online&page=2`. */
export function viewParams(hash) {
  const at = hash.indexOf("?");
  return new URLSearchParams(at < 0 ? "" : hash.slice(at + 1));
}

export class DevicesPanel {
  constructor(root, api, { onSummary, onQuery } = {}) {
    this.root = root;
    this.api = api;
    this.onSummary = onSummary || (() => {});
    this.onQuery = onQuery || (() => {});
    this.params = new URLSearchParams();
    this.rows = new Map();      // id → compact row of the current page
    this.ids = [];              // the page, in order
    this.cursor = null;
    this.total = 0;
    this.loaded = false;
    this.seq = 0;               // only the newest answer is drawn
    this.detailId = null;
    this.filterInput = $("#device-filter", root);
    this.whereInput = $("#device-where", root);
    this.whereError = $("#device-where-error", root);
    this.statusSelect = $("#device-status", root);
    this.quickBox = $("#device-quick", root);
    this.countBox = $("#device-count", root);
    this.tableBox = $("#devices-table", root);
    this.pager = $("#device-pager", root);
    this.drawer = $("#device-details", root);
    this.filterInput.addEventListener("input", () => {
      this.typedAt = performance.now();
      clearTimeout(this.debounce);
      this.debounce = setTimeout(() => this.set({ q: this.filterInput.value.trim() }), DEBOUNCE_MS);
    });
    this.whereInput.addEventListener("keydown", (e) => {
      if (e.key === "Enter") { e.preventDefault(); this.set({ where: this.whereInput.value.trim() }); }
    });
    this.statusSelect.addEventListener("change", () => this.set({ status: this.statusSelect.value }));
    $("#device-clear", root).addEventListener("click", () => {
      this.params = new URLSearchParams();
      this.syncInputs();
      this.set({});
      this.filterInput.focus();
    });
    this.drawer.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.preventDefault(); this.close(); } });
  }

  // --- the filters, in the address ------------------------------------------------------------------
  /** The view's state from the address (on load, on a shared link, on back/forward). */
  useParams(params) {
    const next = new URLSearchParams();
    for (const [k, v] of params) if (v !== "" && (FILTER_KEYS.includes(k) || k === "sort" || k === "page")) next.set(k, v);
    if (next.toString() === this.params.toString() && this.loaded) return;
    this.params = next;
    this.syncInputs();
    this.fetchPage();
  }

  /** Change some filters (an empty value removes one); back to page 1 unless the page is given. */
  set(changes) {
    const next = new URLSearchParams(this.params);
    if (!("page" in changes)) next.delete("page");
    for (const [k, v] of Object.entries(changes)) {
      if (v === "" || v === null || v === undefined || (k === "page" && Number(v) <= 1)) next.delete(k); else next.set(k, String(v));
    }
    this.params = next;
    const query = next.toString();
    const hash = "#devices" + (query ? "?" + query : "");
    if (location.hash !== hash && !location.hash.startsWith("#devices/")) history.replaceState(null, "", hash);
    this.fetchPage();
  }

  syncInputs() {
    this.filterInput.value = this.params.get("q") || "";
    this.whereInput.value = this.params.get("where") || "";
    this.statusSelect.value = this.params.get("status") || "";
    this.drawQuick();
  }

  page() {
    return Math.max(1, Number(this.params.get("page")) || 1);
  }

  query(extra = {}) {
    const q = new URLSearchParams({ fields: "compact", limit: String(PAGE_SIZE),
                                    offset: String((this.page() - 1) * PAGE_SIZE), sort: this.params.get("sort") || "id" });
    for (const k of FILTER_KEYS) if (this.params.get(k)) q.set(k, this.params.get(k));
    for (const [k, v] of Object.entries(extra)) q.set(k, v);
    return "/v1/edges?" + q.toString();
  }

  // --- fetching -------------------------------------------------------------------------------------
  /** A whole page (a filter, the sort or the page changed). */
  async fetchPage() {
    if (!this.api.token) return;
    const seq = ++this.seq;
    let data;
    try {
      data = await this.api.get(this.query());
    } catch (err) {
      if (seq !== this.seq) return;
      if (err.kind && err.status === 400) { this.showWhereError(err); return; }
      throw err;
    }
    if (seq !== this.seq) return;
    this.showWhereError(null);
    this.rows = new Map(data.edges.map((e) => [e.id, e]));
    this.ids = data.edges.map((e) => e.id);
    this.accept(data);
    this.render();
    if (this.typedAt) { this.lastFilterMs = performance.now() - this.typedAt; this.typedAt = null; }
  }

  /** The periodic refresh: only what changed on this page since the cursor. */
  async refresh() {
    if (!this.api.token) return;
    if (!this.loaded || this.cursor === null) { await this.fetchPage(); return; }
    const seq = this.seq;
    const data = await this.api.get(this.query({ since: String(this.cursor) }));
    if (seq !== this.seq) return;  // a filter changed meanwhile: its own fetch draws the page
    const missing = data.ids.filter((id) => !this.rows.has(id) && !data.edges.some((e) => e.id === id));
    if (missing.length) { await this.fetchPage(); return; }
    for (const e of data.edges) this.rows.set(e.id, e);
    const reordered = data.ids.join("\n") !== this.ids.join("\n");
    this.ids = data.ids;
    for (const id of [...this.rows.keys()]) if (!this.ids.includes(id)) this.rows.delete(id);
    this.accept(data);
    if (reordered) this.render();
    else this.patch(data.edges.map((e) => e.id));
    if (this.detailId) await this.refreshDetails();
  }

  accept(data) {
    this.cursor = data.cursor;
    this.total = data.total;
    this.fleet = data.fleet;
    this.loaded = true;
    this.fetchedAt = Date.now();
    this.onSummary({ total: data.fleet.total, online: data.fleet.online, offline: data.fleet.offline,
                     missing: data.fleet.missing });
  }

  forget() {
    this.rows = new Map();
    this.ids = [];
    this.cursor = null;
    this.loaded = false;
    this.seq++;
    if (this.detailId) this.close();
    clear(this.tableBox);
    clear(this.countBox);
    clear(this.pager);
  }

  /** The region and kind filters: their values from the summary, fetched when the view opens. */
  async loadChoices() {
    if (!this.api.token) return;
    try {
      const summary = await this.api.get("/v1/edges/summary");
      this.choices = summary;
      this.drawQuick();
    } catch { /* the selects keep what they had */ }
  }

  drawQuick() {
    const meta = (this.choices && this.choices.metadata) || {};
    const models = (this.choices && this.choices.models) || {};
    const select = (key, label, values, current) => {
      const options = [...values];
      if (current && !options.includes(current)) options.push(current);
      return h("label", { class: ["quick", current && "active"] }, h("span", {}, label),
        h("select", { id: "quick-" + key.replace(/^meta\./, ""), "data-key": key, "aria-label": "filter by " + label,
                      onchange: (e) => this.set({ [key]: e.target.value }) },
          h("option", { value: "" }, "all"), options.map((v) => h("option", { value: v, selected: v === current }, v))));
    };
    clear(this.quickBox,
      select("meta.region", "region", Object.keys(meta.region || {}).sort(), this.params.get("meta.region") || ""),
      select("meta.kind", "kind", Object.keys(meta.kind || {}).sort(), this.params.get("meta.kind") || ""),
      select("attention", "attention", ["any", ...ATTENTION], this.params.get("attention") || ""),
      Object.keys(models).length ? select("model", "model", Object.keys(models), this.params.get("model") || "") : null);
  }

  showWhereError(err) {
    this.whereInput.classList.toggle("invalid", !!err);
    if (!err) { this.whereError.hidden = true; clear(this.whereError); return; }
    const text = this.params.get("where") || "";
    const parts = [h("b", { class: "error-kind" }, err.kind), " ", err.message];
    if (err.line) {
      const line = text.split("\n")[err.line - 1] ?? "";
      parts.push(h("pre", { class: "excerpt", id: "where-excerpt" }, line + "\n" + " ".repeat(Math.max(0, (err.column || 1) - 1)) + "^"));
    }
    clear(this.whereError, parts);
    this.whereError.hidden = false;
    clear(this.tableBox, h("p", { class: "muted empty" }, "The filter does not run: fix it above."));
  }

  // --- drawing --------------------------------------------------------------------------------------
  render() {
    if (!this.loaded) return;
    const sort = this.params.get("sort") || "id";
    const head = h("tr", {}, COLUMNS.map((c) => {
      const sorted = c.sort && sort.replace(/^-/, "") === c.sort;
      const down = sort.startsWith("-");
      return h("th", { class: [c.num && "num", "col-" + c.key], scope: "col", title: c.title || null,
                       "aria-sort": sorted ? (down ? "descending" : "ascending") : null },
        c.sort ? h("button", { type: "button", class: "sort", "data-key": "sort:" + c.key, onclick: () => this.sortBy(c.sort) },
                   c.label || h("span", { class: "dot on" }), sorted ? (down ? " ▼" : " ▲") : "")
               : c.label);
    }));
    const rows = this.ids.map((id) => this.row(this.rows.get(id)));
    const table = h("table", { class: "devices", id: "devices" }, h("thead", {}, head), h("tbody", {}, rows));
    const filtered = FILTER_KEYS.some((k) => this.params.get(k));
    const empty = !rows.length ? h("p", { class: "muted empty" },
      filtered ? "No device matches the filter." : "No device is registered yet: provision one (Admin) or start a simulated fleet (streamql edge --simulate 20 …).") : null;
    keepFocus(this.tableBox, () => clear(this.tableBox, table, empty));
    this.drawCount();
    this.drawPager();
  }

  /** Replace only the rows that changed (a refresh that kept the page's order). */
  patch(ids) {
    const body = this.tableBox.querySelector("tbody");
    if (!body) { this.render(); return; }
    for (const id of ids) {
      const old = body.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
      if (old) old.replaceWith(this.row(this.rows.get(id)));
    }
    this.drawCount();
  }

  drawCount() {
    const f = this.fleet || {};
    clear(this.countBox, h("span", { id: "device-total", "data-total": String(this.total) },
                           `${this.total.toLocaleString("en")} of ${plural(f.total || 0, "device")}`),
          h("span", { class: "muted" }, ` · ${(f.online || 0).toLocaleString("en")} online`));
  }

  drawPager() {
    const pages = Math.max(1, Math.ceil(this.total / PAGE_SIZE));
    const page = this.page();
    const first = this.total ? (page - 1) * PAGE_SIZE + 1 : 0;
    clear(this.pager,
      h("button", { type: "button", class: "small", id: "page-prev", disabled: page <= 1, onclick: () => this.set({ page: page - 1 }) }, "‹ previous"),
      h("span", { class: "muted", id: "page-info" }, `${first}–${Math.min(this.total, page * PAGE_SIZE)} · page ${page} of ${pages}`),
      h("button", { type: "button", class: "small", id: "page-next", disabled: page >= pages, onclick: () => this.set({ page: page + 1 }) }, "next ›"));
  }

  sortBy(key) {
    const now = this.params.get("sort") || "id";
    const next = now === key ? "-" + key : now === "-" + key ? key : (["battery", "cpu", "memory", "attention", "last_seen"].includes(key) ? "-" + key : key);
    this.set({ sort: next === "id" ? "" : next });
  }

  row(e) {
    const cells = {
      status: () => h("td", { class: "col-status", title: e.status, "data-label": "status" },
                      h("span", { class: ["dot", e.status === "online" ? "on" : e.status === "missing" ? "bad" : "off"] }),
                      h("span", { class: "status-text" }, e.status)),
      id: () => h("td", { class: "id col-id" }, h("a", { href: "#devices/" + encodeURIComponent(e.id), class: "device-link", "data-key": "dev:" + e.id }, e.id)),
      region: () => this.metaCell(e, "region"),
      kind: () => this.metaCell(e, "kind"),
      cpu: () => h("td", { class: "num col-cpu", "data-label": "CPU" }, isNumber(e.cpu_percent) && e.online ? [num(e.cpu_percent, 3) + " %", bar(e.cpu_percent)] : "—"),
      memory: () => h("td", { class: "num col-memory", "data-label": "memory" }, e.online ? kb(e.memory_kb) : "—"),
      battery: () => h("td", { class: "num col-battery", "data-label": "battery" },
                       isNumber(e.battery) ? [num(e.battery, 3) + " %", bar(e.battery, { cls: e.battery < 20 ? "low" : "" })] : "—"),
      uptime: () => h("td", { class: "num col-uptime", "data-label": "uptime" }, e.online ? duration(e.uptime_s) : "—"),
      seen: () => h("td", { class: ["col-seen", e.online ? null : "muted"], "data-label": "last seen" }, e.online ? "online" : ago(e.last_seen)),
      models: () => h("td", { class: "chips col-models", "data-label": "models" }, Object.entries(e.models || {}).map(([m, v]) =>
        h("span", { class: "chip model" }, m, h("span", { class: "v" }, v)))),
      attention: () => h("td", { class: "chips col-attention", "data-label": "attention" },
                          (e.attention || []).map((a) => h("span", { class: "chip attention" }, a))),
    };
    return h("tr", { "data-id": e.id, class: [e.online ? "online" : "offline", e.id === this.detailId && "selected"],
                     onclick: (ev) => { if (!ev.target.closest("a, button")) location.hash = "#devices/" + encodeURIComponent(e.id); } },
             COLUMNS.map((c) => cells[c.key]()));
  }

  metaCell(e, key) {
    const v = (e.metadata || {})[key];
    if (v === undefined) return h("td", { class: "col-" + key, "data-label": key }, "");
    return h("td", { class: "col-" + key, "data-label": key },
      h("button", { type: "button", class: "plain", title: `filter by ${key} = ${metaText(v)}`,
                    onclick: (ev) => { ev.stopPropagation(); this.set({ ["meta." + key]: metaText(v) }); } }, metaText(v)));
  }

  // --- details ------------------------------------------------------------------------------------
  async open(id) {
    const changed = this.detailId !== id;
    this.detailId = id;
    this.drawer.hidden = false;
    this.root.classList.add("with-details");
    document.body.classList.add("sheet-open");
    if (changed) clear(this.drawer, this.drawerHead(id, null), h("p", { class: "muted" }, "loading " + id + "…"));
    for (const tr of this.tableBox.querySelectorAll("tr.selected")) tr.classList.remove("selected");
    const tr = this.tableBox.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
    if (tr) tr.classList.add("selected");
    await this.refreshDetails();
    if (changed) { const close = $(".close", this.drawer); if (close) close.focus({ preventScroll: true }); }
  }

  close() {
    this.detailId = null;
    this.drawer.hidden = true;
    this.root.classList.remove("with-details");
    document.body.classList.remove("sheet-open");
    if (location.hash.startsWith("#devices/")) {
      const id = decodeURIComponent(location.hash.slice(9));
      const query = this.params.toString();
      history.replaceState(null, "", "#devices" + (query ? "?" + query : ""));
      const link = this.tableBox.querySelector(`tr[data-id="${CSS.escape(id)}"] a`);
      if (link) link.focus();
    }
    for (const tr of this.tableBox.querySelectorAll("tr.selected")) tr.classList.remove("selected");
  }

  async refreshDetails() {
    const id = this.detailId;
    let edge;
    try {
      edge = await this.api.get("/v1/edges/" + encodeURIComponent(id));
    } catch (err) {
      if (this.detailId !== id) return;
      clear(this.drawer, this.drawerHead(id, null), h("p", { class: "error" }, err.status === 404 ? `No device ${id} is registered.` : err.message));
      return;
    }
    if (this.detailId !== id) return;
    this.shown = { id, edge };
    whenIdle(this.drawLater || (this.drawLater = () => this.drawDetails()));
  }

  drawDetails() {
    if (!this.shown || this.shown.id !== this.detailId) return;
    const { id, edge } = this.shown;
    const scroll = this.drawer.scrollTop;
    const opened = [...this.drawer.querySelectorAll("details[open]")].map((d) => d.dataset.key);
    keepFocus(this.drawer, () => clear(this.drawer, this.drawerHead(id, edge), this.details(edge)));
    for (const key of opened) { const d = this.drawer.querySelector(`details[data-key="${key}"]`); if (d) d.open = true; }
    this.drawer.scrollTop = scroll;
  }

  drawerHead(id, edge) {
    return h("div", { class: "drawer-head" },
      h("button", { type: "button", class: "back small ghost", "aria-label": "back to the devices", onclick: () => this.close() }, "‹ devices"),
      h("h2", { id: "device-title" }, edge ? h("span", { class: ["dot", edge.online ? "on" : "off"] }) : null, id),
      edge ? h("span", { class: ["pill", edge.online ? "state-done" : "state-stopped"] }, edge.online ? "online" : edge.status || "offline") : null,
      h("button", { type: "button", class: "close", "data-key": "close", title: "close (Esc)", "aria-label": "close the details", onclick: () => this.close() }, "×"));
  }

  details(e) {
    const health = e.health || {};
    const caps = e.capabilities || {};
    const kv = (pairs) => h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    const battery = batteryOf(health);
    const link = health.link || {};
    const connected = e.online && link.connected === true;   // an offline device's link is never connected
    const signals = caps.signals || [];
    const sections = [];
    sections.push(h("section", { class: "facts" }, kv([
      ["status", e.online ? "online" : `${e.status || "offline"}, last seen ${ago(e.last_seen)}`],
      ["last seen", dateTime(e.last_seen)],
      ["registered", dateTime(e.created)],
      ["restarts", String(e.restarts ?? health.restarts ?? 0)],
      ["attention", (e.attention || []).length ? e.attention.join(", ") : undefined],
    ])));
    sections.push(h("section", {}, h("h3", {}, "Metadata"),
      Object.keys(e.metadata || {}).length
        ? kv(Object.entries(e.metadata).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, metaText(v)]))
        : h("p", { class: "muted" }, "none")));
    sections.push(h("section", { id: "device-health" }, h("h3", {}, "Health", h("span", { class: "muted small" }, health.time ? " as of " + ago(health.time) : "")),
      Object.keys(health).length ? kv([
        ["CPU", isNumber(health.cpu_percent) ? num(health.cpu_percent, 3) + " %" : "—"],
        ["memory", kb(health.memory_kb)],
        ["battery", isNumber(battery) ? num(battery, 3) + " %" + (health.battery && health.battery.charging ? " (charging)" : "") : "—"],
        ["uptime", e.online ? duration(health.uptime_s) : "—"],
        ["link", link.connected === undefined && e.online ? "—" : (connected ? "connected" : "disconnected") +
                 (connected && isNumber(link.rtt_ms) ? `, rtt ${num(link.rtt_ms, 3)} ms` : "") +
                 (isNumber(link.reconnects) ? `, ${plural(link.reconnects, "reconnect")}` : "")],
        ["buffer", health.buffer ? `${plural(health.buffer.records ?? 0, "record")}, ${kb((health.buffer.bytes ?? 0) / 1024)}` +
                   (health.buffer.dropped ? `, ${health.buffer.dropped} dropped` : "") : undefined],
        ["queries", Array.isArray(health.queries) ? String(health.queries.length) : undefined],
        ["errors", Array.isArray(health.errors) && health.errors.length ? health.errors.map((x) => typeof x === "string" ? x : x.message || JSON.stringify(x)).join("; ") : undefined],
      ]) : h("p", { class: "muted" }, "no health report yet"),
      Object.keys(health).length ? h("details", { "data-key": "health-json" }, h("summary", {}, "the whole health report"), h("pre", { class: "json" }, JSON.stringify(health, null, 2))) : null));
    sections.push(h("section", {}, h("h3", {}, "Models"),
      Object.keys(e.models || {}).length ? h("table", { class: "compact", id: "device-models" },
        h("thead", {}, h("tr", {}, h("th", {}, "model"), h("th", {}, "version"), h("th", {}, "previous"), h("th", {}, "updated"))),
        h("tbody", {}, Object.entries(e.models).map(([m, v]) => h("tr", {}, h("td", {}, m), h("td", {}, v.version),
          h("td", {}, v.previous_version || "—"), h("td", {}, ago(v.updated))))))
        : h("p", { class: "muted" }, "no model deployed")));
    sections.push(h("section", { id: "device-signals" }, h("h3", {}, "Signals"),
      signals.length ? h("ul", { class: "signals" }, signals.map((sig) => h("li", {}, h("span", { class: "signal" }, sig),
        h("button", { type: "button", class: "small", "data-key": "plot:" + sig, title: `plot ${sig} of ${e.id} live in the query box`,
                      onclick: () => this.onQuery(signalQuery(e.id, sig)) }, "plot")))) : h("p", { class: "muted" }, "none announced")));
    const capPairs = Object.entries(caps).filter(([k]) => k !== "signals" && k !== "runtimes")
      .map(([k, v]) => [k, /_kb$/.test(k) && isNumber(v) ? kb(v) : metaText(v)]);
    sections.push(h("section", {}, h("h3", {}, "Capabilities"), capPairs.length ? kv(capPairs) : h("p", { class: "muted" }, "none announced"),
      caps.runtimes ? h("p", { class: "runtimes" }, Object.entries(caps.runtimes).map(([k, v]) => h("span", { class: "chip" }, h("span", { class: "k" }, k), String(v)))) : null));
    return h("div", { class: "drawer-body" }, sections);
  }
}

export function signalQuery(id, signal) {
  if (signal === "vibration") {
    return `select stream of id(e), mean(w)\nfrom Edge e, Vector of Real w\nwhere id(e) = ${quote(id)}\n` +
           `  and w in winagg(signal_stream('vibration'), 64, 64)@e;`;
  }
  return `select stream of id(e), x\nfrom Edge e, Real x\nwhere id(e) = ${quote(id)}\n  and x in signal_stream(${quote(signal)})@e;`;
}
