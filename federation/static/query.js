// The query box: an editor, Run / Stop, results streaming into a live chart or a table, each
// device's outcome when the statement ends, errors with their position.
"use strict";

import { Chart, planChart } from "./chart.js";
import { $, clear, fullText, h, num, plural, throttle, valueText } from "./util.js";

const TEXT_KEY = "streamql.query", HISTORY_KEY = "streamql.history";
const MAX_KEPT_ROWS = 5000;     // rows kept for the table
const MAX_SHOWN_ROWS = 1000;    // rows in the table's DOM

export const EXAMPLES = [
  ["Vibration, live: mean of 64-sample windows per device",
   "select stream of id(e), mean(w)\nfrom Edge e, Vector of Real w\nwhere w in winagg(signal_stream('vibration'), 64, 64)@e;"],
  ["Devices: region, kind, online",
   "select id(e), region(e), kind(e), online(e) from Edge e;"],
  ["Devices per region",
   "select region(e), count(e) from Edge e group by region(e);"],
  ["Outside temperature, live, as a line plot",
   "//plot: Line plot\nselect stream of id(e), t\nfrom Edge e, Real t\nwhere t in signal_stream('outside_temperature')@e;"],
  ["Signals every device announces",
   "select id(e), signals(e) from Edge e;"],
  ["How the vibration query is planned",
   "explain select stream of id(e), mean(w)\nfrom Edge e, Vector of Real w\nwhere w in winagg(signal_stream('vibration'), 64, 64)@e;"],
];

const OUTCOME_CLASS = { answered: "ok", running: "ok", cancelled: "warn", limit: "warn", offline: "muted", skipped: "warn",
                        "timed out": "bad", failed: "bad" };

/** The `//plot: …` directive of a statement: "line", "scatter", "bar", "text" or null. */
export function plotDirective(text) {
  const match = /^[ \t]*(?:\/\/|--)[ \t]*plot[ \t]*:[ \t]*(\w+)/im.exec(text);
  if (!match) return null;
  const word = match[1].toLowerCase();
  for (const kind of ["line", "scatter", "bar", "text"]) if (word.startsWith(kind)) return kind;
  return "line";
}

/** 1-based line and column of offset `at` in `text`. */
function positionOf(text, at) {
  const before = text.slice(0, at);
  const line = before.split("\n").length;
  return { line, column: at - (before.lastIndexOf("\n") + 1) + 1 };
}

function offsetOf(text, line, column) {
  const lines = text.split("\n");
  let offset = 0;
  for (let i = 0; i < Math.min(line - 1, lines.length - 1); i++) offset += lines[i].length + 1;
  return Math.min(text.length, offset + Math.max(0, (column || 1) - 1));
}

export class QueryPanel {
  constructor(root, api, { onDeployment } = {}) {
    this.root = root;
    this.api = api;
    this.onDeployment = onDeployment || (() => {});
    this.run = null;         // the statement running now
    this.editor = $("#query-text", root);
    this.gutter = $("#query-gutter", root);
    this.runButton = $("#run", root);
    this.stopButton = $("#stop", root);
    this.info = $("#query-info", root);
    this.errorBox = $("#query-error", root);
    this.message = $("#query-message", root);
    this.viewButtons = [...root.querySelectorAll("[data-view]")];
    this.chartBox = $("#chart", root);
    this.tableBox = $("#result-table", root);
    this.resultBox = $(".result", root);
    this.statusBox = $("#query-status", root);
    this.chart = new Chart(this.chartBox);
    this.renderTable = throttle(() => this.drawTable(), 250);
    this.renderInfo = throttle(() => this.drawInfo(), 250);
    this.setupEditor();
    this.setupMenus();
    this.runButton.addEventListener("click", () => this.start());
    this.stopButton.addEventListener("click", () => this.stop());
    for (const button of this.viewButtons) button.addEventListener("click", () => this.setView(button.dataset.view, true));
    this.setView("table", false);
    this.drawInfo();
    this.setupSaved();
    $("#export-csv", root).addEventListener("click", () => this.export("csv"));
    $("#export-json", root).addEventListener("click", () => this.export("json"));
  }

  // --- saved queries (GET/PUT /v1/saved-queries), shared as #query/saved/<name> -------------------
  setupSaved() {
    this.savedMenu = $("#saved", this.root);
    this.savedMenu.addEventListener("change", () => {
      if (this.savedMenu.value) location.hash = "#query/saved/" + encodeURIComponent(this.savedMenu.value);
      this.savedMenu.value = "";
    });
    $("#save-query", this.root).addEventListener("click", () => this.save());
    this.drawSaved([]);
  }

  drawSaved(list) {
    this.saved = list;
    clear(this.savedMenu, h("option", { value: "" }, list.length ? "Saved…" : "Saved (none)"),
          list.map((q) => h("option", { value: q.name, title: q.text }, q.name)));
  }

  async loadSaved() {
    if (!this.api.token) return;
    try { this.drawSaved((await this.api.get("/v1/saved-queries")).queries); } catch { /* the menu keeps what it had */ }
  }

  async save() {
    const name = prompt("Save this statement as (letters, digits, spaces, . _ : -):", this.savedName || "");
    if (!name) return;
    try {
      await this.api.put("/v1/saved-queries/" + encodeURIComponent(name.trim()), { text: this.editor.value });
      this.savedName = name.trim();
      const link = location.origin + location.pathname + "#query/saved/" + encodeURIComponent(this.savedName);
      clear(this.message, h("span", {}, `Saved as “${this.savedName}”. Link: `), h("a", { href: link, id: "saved-link" }, link));
      await this.loadSaved();
    } catch (err) {
      clear(this.message, h("span", { class: "error" }, `Not saved: ${err.message}`));
    }
  }

  async openSaved(name) {
    try {
      const found = await this.api.get("/v1/saved-queries/" + encodeURIComponent(name));
      this.savedName = found.name;
      this.setText(found.text);
      clear(this.message, h("span", { id: "saved-open" }, `Saved query “${found.name}”`), found.description ? h("span", { class: "muted" }, found.description) : null);
    } catch (err) {
      clear(this.message, h("span", { class: "error" }, err.status === 404 ? `No saved query “${name}”.` : err.message));
    }
    this.loadSaved();
  }

  // --- exports --------------------------------------------------------------------------------------
  exportText(format) {
    const run = this.run;
    const columns = run.columns || [];
    if (format === "json") {
      return JSON.stringify(run.rows.map((row) => Object.fromEntries(columns.map((c, i) => [c, row[i]]))), null, 1);
    }
    const cell = (v) => {
      const t = v === null || v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v);
      return /[",\n\r]/.test(t) ? '"' + t.replace(/"/g, '""') + '"' : t;
    };
    return [columns.map(cell).join(","), ...run.rows.map((row) => row.map(cell).join(","))].join("\r\n") + "\r\n";
  }

  export(format) {
    if (!this.run || !this.run.columns) return;
    const blob = new Blob([this.exportText(format)], { type: format === "json" ? "application/json" : "text/csv" });
    const a = h("a", { href: URL.createObjectURL(blob), download: `streamql-result.${format}` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  setupEditor() {
    const saved = localStorage.getItem(TEXT_KEY);
    this.editor.value = saved !== null ? saved : EXAMPLES[0][1];
    const sync = () => {
      const lines = this.editor.value.split("\n").length;
      if (this.gutter.childElementCount !== lines) {
        clear(this.gutter, Array.from({ length: lines }, (_, i) => h("div", { class: i + 1 === this.errorLine ? "err" : null }, i + 1)));
      }
      this.gutter.scrollTop = this.editor.scrollTop;
    };
    this.syncGutter = () => { this.gutter.replaceChildren(); sync(); };
    this.editor.addEventListener("input", () => { localStorage.setItem(TEXT_KEY, this.editor.value); sync(); });
    this.editor.addEventListener("scroll", sync);
    this.editor.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.start();
      } else if (event.key === "Escape" && this.run) {
        event.preventDefault();
        this.stop();
      }
    });
    this.syncGutter();
  }

  setupMenus() {
    const examples = $("#examples", this.root);
    clear(examples, h("option", { value: "" }, "Examples…"),
          EXAMPLES.map(([title], i) => h("option", { value: String(i) }, title)));
    examples.addEventListener("change", () => {
      if (examples.value !== "") this.setText(EXAMPLES[Number(examples.value)][1]);
      examples.value = "";
    });
    this.historyMenu = $("#history", this.root);
    this.historyMenu.addEventListener("change", () => {
      const list = this.history();
      if (this.historyMenu.value !== "") this.setText(list[Number(this.historyMenu.value)]);
      this.historyMenu.value = "";
    });
    this.drawHistory();
  }

  history() {
    try { return JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]"); } catch { return []; }
  }

  remember(text) {
    const list = [text, ...this.history().filter((t) => t !== text)].slice(0, 20);
    localStorage.setItem(HISTORY_KEY, JSON.stringify(list));
    this.drawHistory();
  }

  drawHistory() {
    const list = this.history();
    clear(this.historyMenu, h("option", { value: "" }, list.length ? "History…" : "History (empty)"),
          list.map((t, i) => h("option", { value: String(i), title: t }, t.replace(/\s+/g, " ").slice(0, 90))));
  }

  /** Replace the editor's text (an example, a query about a device) and focus it. */
  setText(text, { run = false } = {}) {
    this.editor.value = text;
    localStorage.setItem(TEXT_KEY, text);
    this.errorLine = null;
    this.syncGutter();
    this.editor.focus();
    this.editor.setSelectionRange(text.length, text.length);
    if (run) this.start();
  }

  // --- running ------------------------------------------------------------------------------------
  start() {
    if (this.run) this.stop();
    const full = this.editor.value;
    let from = this.editor.selectionStart, to = this.editor.selectionEnd;
    let text = full, offset = 0;
    if (to > from && full.slice(from, to).trim()) { text = full.slice(from, to); offset = from; }
    if (!text.trim()) return;
    // a directive on the lines just before a selected statement counts too
    const directive = plotDirective(offset ? full.slice(0, offset).split("\n").slice(-3).join("\n") + text : text);
    this.remember(text.trim());
    this.clearError();
    clear(this.statusBox);
    clear(this.message);
    const run = {
      text, offset, full, directive, started: performance.now(), rows: [], count: 0, columns: null, types: [],
      kind: null, state: "running", userView: false, handle: null, firstRowAt: null,
    };
    this.run = run;
    this.chart.reset(null);
    this.setView(this.view, false);
    this.runButton.disabled = true;
    this.stopButton.disabled = false;
    this.root.classList.add("running");
    const mine = (fn) => (...args) => { if (this.run === run) fn(...args); };
    run.handle = this.api.query(text, {
      columns: mine((head) => this.onColumns(run, head)),
      rows: mine((rows) => this.onRows(run, rows)),
      end: mine((last) => this.finish(run, "done", last)),
      cancelled: mine((last) => this.finish(run, "stopped", last)),
      error: mine((error, last) => { this.showError(run, error); this.finish(run, "error", last); }),
    });
    clearInterval(this.ticker);
    this.ticker = setInterval(() => this.renderInfo(), 1000);
    this.drawInfo();
  }

  stop() {
    const run = this.run;
    if (!run || run.state !== "running") return;
    run.state = "stopping";
    this.stopButton.disabled = true;
    run.handle.stop();
    this.drawInfo();
    // a federation that never confirms the cancel does not leave the page stuck
    setTimeout(() => { if (this.run === run && run.state === "stopping") this.finish(run, "stopped", null); }, 5000);
  }

  onColumns(run, head) {
    run.columns = head.columns || [];
    run.types = head.types || [];
    run.kind = head.kind;
    run.deployment = head.deployment_id;
    this.planView(run);
    this.drawTable();
    this.drawInfo();
  }

  planView(run) {
    run.plan = planChart(run.columns, run.types, run.rows.slice(0, 20));
    // a bag of one row per key (a grouped result) is a category bar chart
    const grouped = run.kind === "bag" && run.plan.key >= 0 && !run.plan.vector && run.plan.time < 0;
    const style = run.directive && run.directive !== "text" ? run.directive : grouped ? "bar" : "line";
    this.chart.reset(run.plan, style);
    if (run.rows.length) this.chart.add(run.rows.slice(-MAX_KEPT_ROWS));
    if (!run.userView) {
      const chart = run.directive ? run.directive !== "text" && run.plan.plottable
                                  : run.kind === "stream" && run.plan.plottable;
      this.setView(chart ? "chart" : "table", false);
    }
  }

  onRows(run, rows) {
    if (!run.columns) this.onColumns(run, { columns: rows[0].map((_, i) => "column " + (i + 1)), types: [], kind: "bag" });
    const first = run.count === 0;
    run.count += rows.length;
    if (run.firstRowAt === null) run.firstRowAt = performance.now();
    if (run.kind === "stream") {
      for (const row of rows) run.rows.push(row);  // the newest are kept
      if (run.rows.length > MAX_KEPT_ROWS) run.rows.splice(0, run.rows.length - MAX_KEPT_ROWS);
    } else {
      for (const row of rows.slice(0, Math.max(0, MAX_KEPT_ROWS - run.rows.length))) run.rows.push(row);  // the first
    }
    // untyped (Object) columns are known by their first values: plan again with them
    if (first && run.types.some((t) => t === "Object" || !t)) this.planView(run);
    else this.chart.add(rows);
    if (this.view === "table") this.renderTable();
    this.renderInfo();
  }

  finish(run, state, last) {
    if (["done", "partial", "error", "stopped"].includes(run.state)) return;
    // an answer some selected devices did not give is partial, and says so; one no device gave
    // because each failed is a failure, never "done · 0 rows"
    const status = last && last.status;
    if (state === "done" && status && status.counts) {
      const failed = (status.counts.failed || 0) + (status.counts["timed out"] || 0);
      const answered = (status.counts.answered || 0) + (status.counts.cancelled || 0) + (status.counts.limit || 0);
      if (failed && !answered && !run.count) state = "error";
    }
    if (state === "done" && last && last.complete === false) state = "partial";
    if ((state === "error" || state === "partial") && status && !(last && last.error)) this.showDeviceError(run, status);
    run.state = state;
    run.ended = performance.now();
    clearInterval(this.ticker);
    this.runButton.disabled = false;
    this.stopButton.disabled = true;
    this.root.classList.remove("running");
    if (last) {
      run.last = last;
      this.drawStatus(last.status || {}, state);
      const deployment = last.deployment_id || run.deployment;
      if (last.message || deployment) {
        clear(this.message, last.message ? h("span", {}, last.message) : null,
              deployment ? h("button", { type: "button", class: "link", onclick: () => this.onDeployment(String(deployment)) },
                             `show deployment ${deployment}`) : null);
      }
      if (deployment) this.onDeployment(String(deployment), { quiet: true });
    } else if (state === "stopped") {
      clear(this.statusBox, h("p", { class: "muted" }, "Stopped: the connection was closed, which cancels the statement on every device."));
    }
    this.setView(this.view, false);
    this.drawInfo();
    for (const id of ["#export-csv", "#export-json"]) $(id, this.root).disabled = !run.columns || !run.rows.length;
  }

  drawInfo() {
    const run = this.run;
    if (!run) { clear(this.info, h("span", { class: "muted" }, "Ctrl+Enter runs the statement (or the selection); Esc stops it.")); return; }
    const end = run.ended || performance.now();
    const seconds = (end - run.started) / 1000;
    const label = { running: "running", stopping: "stopping…", done: "done", partial: "partial", stopped: "stopped",
                    error: "failed" }[run.state];
    const parts = [h("span", { class: ["pill", "state-" + run.state] }, label)];
    if (run.kind) parts.push(h("span", { class: "pill kind" }, run.kind));
    parts.push(h("span", { id: "row-count", "data-rows": String(run.count) }, plural(run.count, "row")));
    parts.push(h("span", { class: "muted" }, num(seconds, 3) + " s"));
    if (run.kind === "stream" && run.count && seconds > 1) parts.push(h("span", { class: "muted" }, num(run.count / seconds, 3) + " rows/s"));
    clear(this.info, parts);
  }

  setView(view, byUser) {
    this.view = view;
    if (byUser && this.run) this.run.userView = true;
    for (const button of this.viewButtons) {
      const on = button.dataset.view === view;
      button.classList.toggle("on", on);
      button.setAttribute("aria-pressed", String(on));
    }
    this.chartBox.hidden = view !== "chart";
    this.tableBox.hidden = view !== "table";
    this.resultBox.hidden = !!(this.run && this.run.state === "error" && !this.run.columns);
    if (view === "chart") this.chart.render(); else this.drawTable();
  }

  drawTable() {
    if (this.view !== "table") return;
    const run = this.run;
    if (!run || !run.columns) { clear(this.tableBox, h("p", { class: "muted empty" }, run ? "waiting for the result…" : "Run a statement to see its rows here.")); return; }
    const stream = run.kind === "stream";
    const rows = stream ? run.rows.slice(-MAX_SHOWN_ROWS / 2).reverse() : run.rows.slice(0, MAX_SHOWN_ROWS);
    const numeric = (i) => ["Integer", "Real", "Number"].includes(run.types[i]);
    const head = h("tr", {}, run.columns.map((c, i) => h("th", { title: run.types[i] || "", class: numeric(i) ? "num" : null }, c,
                                                         run.types[i] ? h("span", { class: "type" }, run.types[i]) : null)));
    const body = rows.map((row) => h("tr", {}, row.map((v) => h("td", {
      class: typeof v === "number" ? "num" : null, title: typeof v === "object" && v !== null ? fullText(v).slice(0, 2000) : null,
    }, valueText(v)))));
    const note = run.count > rows.length
      ? h("p", { class: "muted note" }, stream ? `the newest ${rows.length} of ${run.count} rows, newest first`
                                               : `the first ${rows.length} of ${run.count} rows`) : null;
    const explain = run.kind === "explain";
    clear(this.tableBox, note, explain
      ? h("pre", { class: "plan" }, run.rows.map((r) => r.join(" ")).join("\n"))
      : h("table", { class: "rows" }, h("thead", {}, head), h("tbody", {}, body)),
      !rows.length && run.state !== "running" ? h("p", { class: "muted empty" }, "no rows") : null);
  }

  drawStatus(status, state) {
    // {complete, selected, counts, incomplete, registry_only, devices}: the devices listed are
    // every one for small fleets, else those that did not answer
    const devices = status.devices || {};
    const entries = Object.entries(devices).sort(([a], [b]) => a.localeCompare(b));
    if (status.registry_only || !entries.length) {
      const asked = ["done", "partial"].includes(state) && ["bag", "stream", "vector"].includes(this.run && this.run.kind);
      clear(this.statusBox, asked ? h("p", { class: "muted small", id: "status-none" }, "No device was asked: the registry answered.") : null);
      return;
    }
    const counts = status.counts || {};
    const missing = status.incomplete || [];
    const partial = status.complete === false
      ? h("p", { class: "partial", id: "status-partial" },
          `Partial answer: ${plural(missing.length, "selected device")} did not answer (${missing.slice(0, 8).join(", ")}` +
          `${missing.length > 8 ? ", …" : ""}).`)
      : null;
    const hidden = (status.selected || entries.length) - entries.length;
    clear(this.statusBox, partial,
      h("h3", {}, "Per device", h("span", { class: "summary" },
        Object.entries(counts).map(([o, n]) => h("span", { class: ["pill", "outcome-" + (OUTCOME_CLASS[o] || "muted")] }, `${n} ${o}`)))),
      hidden > 0 ? h("p", { class: "muted small" }, `${plural(hidden, "device")} that answered not listed`) : null,
      h("table", { class: "status", id: "status-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "device"), h("th", {}, "outcome"), h("th", { class: "num" }, "rows"), h("th", {}, "reason"))),
        h("tbody", {}, entries.map(([device, s]) => h("tr", { "data-device": device },
          h("td", {}, h("a", { href: "#devices/" + encodeURIComponent(device) }, device)),
          h("td", {}, h("span", { class: ["pill", "outcome-" + (OUTCOME_CLASS[s.outcome] || "muted")] }, s.outcome)),
          h("td", { class: "num" }, s.rows ?? ""), h("td", { class: "reason" }, s.reason || ""))))));
  }

  /** The first failed device's error, with its position in the statement (as the federation gives it). */
  showDeviceError(run, status) {
    const entry = Object.entries(status.devices || {}).sort(([a], [b]) => a.localeCompare(b))
      .find(([, s]) => s.error || s.outcome === "failed");
    if (!entry) return;
    const [device, s] = entry;
    const error = s.error || { kind: "Error", message: s.reason || "failed" };
    this.showError(run, { ...error, message: error.message }, device);
  }

  // --- errors -------------------------------------------------------------------------------------
  clearError() {
    this.errorLine = null;
    this.errorBox.hidden = true;
    clear(this.errorBox);
    this.syncGutter();
  }

  showError(run, error, device = null) {
    error = error || { kind: "Error", message: "unknown error" };
    let line = error.line, column = error.column;
    if (line && run.offset) {
      const start = positionOf(run.full, run.offset);
      column = line === 1 ? start.column + (column || 1) - 1 : column;
      line = start.line + line - 1;
    }
    const parts = [h("div", { class: "error-head" },
                     device ? h("span", { class: "error-device" }, "first device error, ", h("a", { href: "#devices/" + encodeURIComponent(device) }, device), ": ") : null,
                     h("b", { class: "error-kind" }, error.kind || "Error"),
                     line ? h("span", { class: "error-pos" }, ` at line ${line}, column ${column || 1}`) : null,
                     ": ", h("span", { class: "error-message" }, error.message || ""))];
    if (line && this.editor.value === run.full) {
      const lines = run.full.split("\n");
      const text = lines[line - 1] ?? "";
      const gutter = String(line).padStart(4) + " │ ";
      // the caret keeps the line's tabs so it sits under the right character
      const pad = Array.from(text.slice(0, Math.max(0, (column || 1) - 1))).map((c) => (c === "\t" ? "\t" : " ")).join("");
      parts.push(h("pre", { class: "excerpt", id: "error-excerpt" },
                   gutter + text + "\n" + " ".repeat(gutter.length - 2) + "│ " + pad + "^"));
      parts.push(h("button", { type: "button", class: "link", onclick: () => {
        const at = offsetOf(run.full, line, column);
        this.editor.focus();
        this.editor.setSelectionRange(at, Math.min(at + 1, run.full.length));
      } }, "show in the editor"));
      this.errorLine = line;
      this.syncGutter();
    }
    clear(this.errorBox, parts);
    this.errorBox.hidden = false;
  }
}
