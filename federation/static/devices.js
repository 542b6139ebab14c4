// Devices: GET /v1/edges, refreshed periodically; a text filter over id, metadata, models and
// signals, quick filters by metadata keys (region, kind, …) and online only; a device's details
// (GET /v1/edges/{id}) in a side panel.
"use strict";

import { $, ago, clear, dateTime, duration, h, isNumber, kb, keepFocus, num, plural, quote, whenIdle } from "./util.js";

const PAGE = 10000;                 // the API's largest page
const PINNED = ["region", "kind"];  // metadata keys shown as their own columns and quick filters first
const MAX_QUICK = 4;

export function batteryOf(health) {
  const b = health && health.battery;
  if (isNumber(b)) return b;
  return b && isNumber(b.percent) ? b.percent : null;
}

function metaText(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function haystack(edge) {
  const parts = [edge.id];
  for (const [k, v] of Object.entries(edge.metadata || {})) parts.push(`${k}=${metaText(v)}`, metaText(v));
  for (const [m, v] of Object.entries(edge.models || {})) parts.push(m, `${m}@${v.version}`);
  for (const sig of (edge.capabilities && edge.capabilities.signals) || []) parts.push(sig);
  if (edge.capabilities && edge.capabilities.cpu) parts.push(String(edge.capabilities.cpu));
  return parts.join("\n").toLowerCase();
}

function bar(value, { max = 100, cls = "" } = {}) {
  const fraction = isNumber(value) ? Math.max(0, Math.min(1, value / max)) : 0;
  const fill = h("span", { class: "bar-fill " + cls });
  fill.style.width = (fraction * 100).toFixed(1) + "%";
  return h("span", { class: "bar", "aria-hidden": "true" }, fill);
}

const COLUMNS = [
  { key: "online", label: "", title: "online", sort: (e) => (e.online ? 0 : 1) },
  { key: "id", label: "device", sort: (e) => e.id },
  { key: "meta:region", label: "region", sort: (e) => metaText(e.metadata.region ?? "") },
  { key: "meta:kind", label: "kind", sort: (e) => metaText(e.metadata.kind ?? "") },
  { key: "meta", label: "metadata" },
  { key: "cpu", label: "CPU", num: true, sort: (e) => e.health?.cpu_percent ?? -1 },
  { key: "memory", label: "memory", num: true, sort: (e) => e.health?.memory_kb ?? -1 },
  { key: "battery", label: "battery", num: true, sort: (e) => batteryOf(e.health) ?? -1 },
  { key: "uptime", label: "uptime", num: true, sort: (e) => (e.online ? e.health?.uptime_s ?? -1 : -1) },
  { key: "seen", label: "last seen", sort: (e) => -(e.last_seen ?? 0) },
  { key: "models", label: "models", sort: (e) => Object.keys(e.models || {}).join(",") },
];

export class DevicesPanel {
  constructor(root, api, { onSummary, onQuery } = {}) {
    this.root = root;
    this.api = api;
    this.onSummary = onSummary || (() => {});
    this.onQuery = onQuery || (() => {});
    this.edges = [];
    this.total = 0;
    this.loaded = false;
    this.quick = {};           // metadata key → selected value ("" for any)
    this.sortKey = "id";
    this.sortDir = 1;
    this.detailId = null;
    this.filterInput = $("#device-filter", root);
    this.onlineBox = $("#device-online", root);
    this.quickBox = $("#device-quick", root);
    this.countBox = $("#device-count", root);
    this.tableBox = $("#devices-table", root);
    this.drawer = $("#device-details", root);
    this.filterInput.addEventListener("input", () => this.render());
    this.onlineBox.addEventListener("change", () => this.render());
    $("#device-clear", root).addEventListener("click", () => {
      this.filterInput.value = "";
      this.onlineBox.checked = false;
      this.quick = {};
      this.render();
      this.filterInput.focus();
    });
    this.drawer.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.preventDefault(); this.close(); } });
  }

  async refresh() {
    if (!this.api.token) return;
    const data = await this.api.get(`/v1/edges?limit=${PAGE}`);
    this.edges = data.edges;
    this.total = data.total;
    this.loaded = true;
    whenIdle(this.renderLater || (this.renderLater = () => this.render()));
    if (this.detailId) await this.refreshDetails();
    const online = this.edges.filter((e) => e.online).length;
    this.onSummary({ total: data.total, online });
  }

  forget() {
    this.edges = [];
    this.total = 0;
    this.loaded = false;
    if (this.detailId) this.close();
    clear(this.tableBox);
    clear(this.quickBox);
    clear(this.countBox);
  }

  matches(edge) {
    if (this.onlineBox.checked && !edge.online) return false;
    for (const [key, value] of Object.entries(this.quick)) {
      if (value !== "" && metaText((edge.metadata || {})[key] ?? "") !== value) return false;
    }
    const words = this.filterInput.value.toLowerCase().split(/\s+/).filter(Boolean);
    if (words.length) {
      const text = haystack(edge);
      return words.every((w) => text.includes(w));
    }
    return true;
  }

  quickKeys() {
    const values = new Map();
    for (const edge of this.edges) {
      for (const [k, v] of Object.entries(edge.metadata || {})) {
        if (v !== null && typeof v === "object") continue;
        if (!values.has(k)) values.set(k, new Set());
        values.get(k).add(metaText(v));
      }
    }
    const keys = [...values.keys()].filter((k) => values.get(k).size >= 1 && values.get(k).size <= 30 &&
                                                  (PINNED.includes(k) || values.get(k).size >= 2));
    keys.sort((a, b) => (PINNED.includes(a) ? PINNED.indexOf(a) : 99) - (PINNED.includes(b) ? PINNED.indexOf(b) : 99) ||
                        values.get(a).size - values.get(b).size || a.localeCompare(b));
    const shown = keys.slice(0, MAX_QUICK);
    for (const k of Object.keys(this.quick)) if (!shown.includes(k) && values.has(k)) shown.push(k);
    return shown.map((k) => [k, [...values.get(k) || []].sort()]);
  }

  setQuick(key, value) {
    this.quick[key] = value;
    this.render();
  }

  renderQuick() {
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
    const selects = this.quickKeys().map(([key, values]) => {
      const current = this.quick[key] ?? "";
      if (current && !values.includes(current)) values.push(current);
      const select = h("select", { "data-key": key, id: "quick-" + key, "aria-label": "filter by " + key,
                                   onchange: (e) => this.setQuick(key, e.target.value) },
                       h("option", { value: "" }, `all`),
                       values.map((v) => h("option", { value: v, selected: v === current }, v)));
      select.value = current;
      return h("label", { class: ["quick", current && "active"] }, h("span", {}, key), select);
    });
    clear(this.quickBox, selects);
    if (focused) { const again = this.quickBox.querySelector(`[data-key="${CSS.escape(focused)}"]`); if (again) again.focus(); }
  }

  render() {
    if (!this.loaded) return;
    const focusedQuick = this.quickBox.contains(document.activeElement);
    if (!focusedQuick || !this.quickBox.childElementCount) this.renderQuick();
    const pinned = PINNED.filter((k) => this.edges.some((e) => k in (e.metadata || {})));
    const columns = COLUMNS.filter((c) => !c.key.startsWith("meta:") || pinned.includes(c.key.slice(5)));
    const shown = this.edges.filter((e) => this.matches(e));
    const column = COLUMNS.find((c) => c.key === this.sortKey) || COLUMNS[1];
    shown.sort((a, b) => {
      const x = column.sort(a), y = column.sort(b);
      return (x < y ? -1 : x > y ? 1 : 0) * this.sortDir || a.id.localeCompare(b.id);
    });
    const online = shown.filter((e) => e.online).length;
    clear(this.countBox, `${shown.length} of ${plural(this.total, "device")}`, h("span", { class: "muted" }, ` · ${online} online`),
          this.edges.length < this.total ? h("span", { class: "warn" }, ` (only the first ${this.edges.length} are loaded)`) : null);
    const head = h("tr", {}, columns.map((c) => {
      const sorted = c.sort && this.sortKey === c.key;
      const th = h("th", { class: [c.num && "num", c.sort && "sortable", c.key === "meta" && "col-meta"], scope: "col", title: c.title || null,
                           "aria-sort": sorted ? (this.sortDir > 0 ? "ascending" : "descending") : null },
                   c.sort ? h("button", { type: "button", class: "sort", "data-key": "sort:" + c.key, onclick: () => this.sortBy(c.key) },
                              c.label || h("span", { class: "dot on" }), sorted ? (this.sortDir > 0 ? " ▲" : " ▼") : "")
                          : c.label);
      return th;
    }));
    const rows = shown.map((e) => this.row(e, columns, pinned));
    const table = h("table", { class: "devices", id: "devices" }, h("thead", {}, head), h("tbody", {}, rows));
    const empty = !shown.length ? h("p", { class: "muted empty" },
      this.edges.length ? "No device matches the filter." : "No device is registered yet: provision one (streamql federation provision) or start a simulated fleet (streamql edge --simulate 20 …).") : null;
    const scroll = this.tableBox.scrollTop;
    keepFocus(this.tableBox, () => clear(this.tableBox, table, empty));
    this.tableBox.scrollTop = scroll;
  }

  sortBy(key) {
    if (this.sortKey === key) this.sortDir = -this.sortDir;
    else { this.sortKey = key; this.sortDir = 1; }
    this.render();
    const button = this.tableBox.querySelector(`th[aria-sort] button`);
    if (button) button.focus();
  }

  row(e, columns, pinned) {
    const health = e.health || {};
    const cells = {
      online: () => h("td", { title: e.online ? "online" : "offline" }, h("span", { class: ["dot", e.online ? "on" : "off"] })),
      id: () => h("td", { class: "id" }, h("a", { href: "#devices/" + encodeURIComponent(e.id), class: "device-link", "data-key": "dev:" + e.id }, e.id)),
      "meta:region": () => this.metaCell(e, "region"),
      "meta:kind": () => this.metaCell(e, "kind"),
      meta: () => h("td", { class: "chips col-meta" }, Object.entries(e.metadata || {}).filter(([k]) => !pinned.includes(k))
        .map(([k, v]) => h("button", { type: "button", class: "chip", title: `filter by ${k} = ${metaText(v)}`,
                                       onclick: (ev) => { ev.stopPropagation(); this.filterBy(k, metaText(v)); } },
                           h("span", { class: "k" }, k), metaText(v)))),
      cpu: () => h("td", { class: "num" }, isNumber(health.cpu_percent) && e.online ? [num(health.cpu_percent, 3) + " %", bar(health.cpu_percent)] : "—"),
      memory: () => h("td", { class: "num" }, e.online ? kb(health.memory_kb) : "—"),
      battery: () => {
        const b = batteryOf(health);
        return h("td", { class: "num" }, isNumber(b) ? [num(b, 3) + " %", bar(b, { cls: b < 20 ? "low" : "" })] : "—");
      },
      uptime: () => h("td", { class: "num" }, e.online ? duration(health.uptime_s) : "—"),
      seen: () => h("td", { class: e.online ? null : "muted", title: dateTime(e.last_seen) }, e.online ? "online" : ago(e.last_seen)),
      models: () => h("td", { class: "chips" }, Object.entries(e.models || {}).map(([m, v]) =>
        h("span", { class: "chip model", title: v.previous_version ? `previously ${v.previous_version}` : null }, m, h("span", { class: "v" }, v.version)))),
    };
    return h("tr", { "data-id": e.id, class: [e.online ? "online" : "offline", e.id === this.detailId && "selected"],
                     onclick: (ev) => { if (!ev.target.closest("a, button")) location.hash = "#devices/" + encodeURIComponent(e.id); } },
             columns.map((c) => cells[c.key]()));
  }

  metaCell(e, key) {
    const v = (e.metadata || {})[key];
    if (v === undefined) return h("td", {}, "");
    return h("td", {}, h("button", { type: "button", class: "plain", title: `filter by ${key} = ${metaText(v)}`,
                                     onclick: (ev) => { ev.stopPropagation(); this.filterBy(key, metaText(v)); } }, metaText(v)));
  }

  filterBy(key, value) {
    if (this.quickKeys().some(([k]) => k === key)) this.quick[key] = value;
    else this.filterInput.value = (this.filterInput.value + ` ${key}=${value}`).trim();
    this.render();
  }

  // --- details ------------------------------------------------------------------------------------
  async open(id) {
    const changed = this.detailId !== id;
    this.detailId = id;
    this.drawer.hidden = false;
    this.root.classList.add("with-details");
    if (changed) clear(this.drawer, h("p", { class: "muted" }, "loading " + id + "…"));
    for (const tr of this.tableBox.querySelectorAll("tr.selected")) tr.classList.remove("selected");
    const tr = this.tableBox.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
    if (tr) tr.classList.add("selected");
    await this.refreshDetails();
    if (changed) { const close = $(".close", this.drawer); if (close) close.focus(); }
  }

  close() {
    this.detailId = null;
    this.drawer.hidden = true;
    this.root.classList.remove("with-details");
    if (location.hash.startsWith("#devices/")) {
      const id = decodeURIComponent(location.hash.slice(9));
      history.replaceState(null, "", "#devices");
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
      h("h2", { id: "device-title" }, edge ? h("span", { class: ["dot", edge.online ? "on" : "off"] }) : null, id),
      edge ? h("span", { class: ["pill", edge.online ? "state-done" : "state-stopped"] }, edge.online ? "online" : "offline") : null,
      h("button", { type: "button", class: "close", "data-key": "close", title: "close (Esc)", "aria-label": "close the details", onclick: () => this.close() }, "×"));
  }

  details(e) {
    const health = e.health || {};
    const caps = e.capabilities || {};
    const kv = (pairs) => h("dl", { class: "kv" }, pairs.filter(([, v]) => v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    const battery = batteryOf(health);
    const link = health.link || {};
    const signals = caps.signals || [];
    const sections = [];
    sections.push(h("section", { class: "facts" }, kv([
      ["status", e.online ? "online" : `offline, last seen ${ago(e.last_seen)}`],
      ["last seen", dateTime(e.last_seen)],
      ["registered", dateTime(e.created)],
      ["restarts", String(e.restarts ?? health.restarts ?? 0)],
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
        ["uptime", duration(health.uptime_s)],
        ["link", link.connected === undefined ? "—" : (link.connected ? "connected" : "disconnected") +
                 (isNumber(link.rtt_ms) ? `, rtt ${num(link.rtt_ms, 3)} ms` : "") +
                 (isNumber(link.reconnects) ? `, ${plural(link.reconnects, "reconnect")}` : "")],
        ["buffer", health.buffer ? `${plural(health.buffer.records ?? 0, "record")}, ${kb((health.buffer.bytes ?? 0) / 1024)}` +
                   (health.buffer.dropped ? `, ${health.buffer.dropped} dropped` : "") : undefined],
        ["queries", Array.isArray(health.queries) ? String(health.queries.length) : undefined],
        ["errors", Array.isArray(health.errors) && health.errors.length ? health.errors.map((x) => typeof x === "string" ? x : JSON.stringify(x)).join("; ") : undefined],
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
