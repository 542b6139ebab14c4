// Models and flows: the model catalogue (bundles, versions, where each version runs, with an
// upload for deploy tokens), and the records the deployed models publish (flows), live.
"use strict";

import { devicesLink } from "./overview.js";
import { $, ago, clear, dateTime, h, kb, plural, valueText } from "./util.js";

export class ModelsPanel {
  constructor(root, api, { may } = {}) {
    this.root = root;
    this.api = api;
    this.may = may || (() => false);
    this.box = $("#models", root);
    this.data = null;
    this.note = null;
  }

  forget() { this.data = null; clear(this.box); }

  async refresh() {
    if (!this.api.token) return;
    const [models, summary] = await Promise.all([this.api.get("/v1/models"), this.api.get("/v1/edges/summary")]);
    this.data = { bundles: models.models, running: summary.models || {} };
    this.render();
  }

  async uploadFile(file) {
    this.note = h("p", { class: "muted" }, `uploading ${file.name}…`);
    this.render();
    try {
      const made = await this.api.upload("/v1/models", file);
      this.note = h("p", { class: "ok-note", id: "upload-result" }, `${made.name} ${made.version} ${made.created ? "uploaded" : "was there already"}` +
                    (made.verified_by ? `, signed by ${made.verified_by}` : ""));
    } catch (err) {
      this.note = h("p", { class: "error", id: "upload-result" }, `${err.kind}: ${err.message}`);
    }
    await this.refresh();
  }

  render() {
    if (!this.data) return;
    const byName = new Map();
    for (const b of this.data.bundles) {
      if (!byName.has(b.name)) byName.set(b.name, []);
      byName.get(b.name).push(b);
    }
    const upload = this.may("deploy") ? h("div", { class: "toolbar", "data-needs": "deploy" },
      h("label", { class: "button-like" }, "Upload a signed bundle…",
        h("input", { type: "file", id: "model-upload", accept: ".bundle,.zip,application/octet-stream", class: "visually-hidden",
                     onchange: (e) => { if (e.target.files[0]) this.uploadFile(e.target.files[0]); } })),
      h("span", { class: "muted small" }, "streamql model pack, then streamql model sign")) : null;
    const names = [...byName.keys()].sort();
    const running = this.data.running;
    clear(this.box, upload, this.note,
      names.length ? h("table", { class: "catalogue", id: "model-catalogue" },
        h("thead", {}, h("tr", {}, h("th", {}, "model"), h("th", {}, "version"), h("th", {}, "runs on"), h("th", {}, "requires"),
                                 h("th", {}, "models and variants"), h("th", { class: "num" }, "size"), h("th", {}, "uploaded"))),
        h("tbody", {}, names.flatMap((name) => byName.get(name).slice().reverse().map((b, i) => {
          const n = (running[name] || {})[b.version] || 0;
          return h("tr", { "data-model": name, "data-version": b.version },
            h("td", { class: "mono" }, i === 0 ? name : ""),
            h("td", { class: "mono" }, b.version),
            h("td", {}, n ? h("a", { href: devicesLink({ model: name, version: b.version }), class: "count-link", "data-count": String(n) }, plural(n, "device"))
                          : h("span", { class: "muted", "data-count": "0" }, "nowhere")),
            h("td", { class: "small" }, Object.entries(b.requirements || {}).map(([k, v]) => `${k} ${/_kb$/.test(k) ? kb(v) : v}`).join(", ") || "—"),
            h("td", { class: "small" }, (b.models || []).map((m) => m.name + (m.variants ? ` (${m.variants.join(", ")})` : "")).join("; ") || "—"),
            h("td", { class: "num" }, kb(b.size / 1024)),
            h("td", { class: "muted", title: dateTime(b.uploaded) }, `${ago(b.uploaded)}${b.uploader ? " by " + b.uploader : ""}`));
        })))) : h("p", { class: "muted empty" }, "No bundle has been uploaded yet."),
      this.unknownVersions(byName));
  }

  /** Versions running that were never uploaded here (deployed elsewhere, or by hand). */
  unknownVersions(byName) {
    const rows = [];
    for (const [name, versions] of Object.entries(this.data.running)) {
      for (const [version, n] of Object.entries(versions)) {
        if (!(byName.get(name) || []).some((b) => b.version === version)) rows.push([name, version, n]);
      }
    }
    return rows.length ? h("section", {}, h("h3", {}, "Running, but not in the catalogue"),
      h("ul", {}, rows.map(([name, version, n]) => h("li", {}, `${name} ${version}: `,
        h("a", { href: devicesLink({ model: name, version }) }, plural(n, "device")))))) : null;
  }
}

export class FlowsPanel {
  constructor(root, api) {
    this.root = root;
    this.api = api;
    this.box = $("#flows", root);
    this.flow = null;
    this.flows = {};
    this.records = [];
  }

  forget() { this.flows = {}; this.records = []; clear(this.box); }

  select(flow) {
    if (flow !== this.flow) { this.flow = flow; this.records = []; }
    this.refresh().catch(() => {});
  }

  async refresh() {
    if (!this.api.token) return;
    this.flows = (await this.api.get("/v1/flows")).flows || {};
    const names = Object.keys(this.flows).sort();
    if (!this.flow || !(this.flow in this.flows)) this.flow = names.includes("alerts") ? "alerts" : names[0] || null;
    if (this.flow) this.records = (await this.api.get(`/v1/flows/${encodeURIComponent(this.flow)}?newest=100`)).records;
    this.render();
  }

  render() {
    const names = Object.keys(this.flows).sort();
    if (!names.length) {
      clear(this.box, h("p", { class: "muted empty" }, "No flow yet: the models deployed on the edges publish their results here (publish(s, 'alerts') in an autostart query)."));
      return;
    }
    const columns = this.records.length && this.records[this.records.length - 1].names ? this.records[this.records.length - 1].names : ["value"];
    clear(this.box,
      h("div", { class: "toolbar" },
        h("div", { class: "segmented", role: "group", "aria-label": "flows" }, names.map((name) => h("button", {
          type: "button", class: ["seg-button", name === this.flow && "on"], "aria-pressed": String(name === this.flow), "data-flow": name,
          onclick: () => { location.hash = "#flows/" + encodeURIComponent(name); },
        }, `${name} `, h("span", { class: "muted" }, this.flows[name].records.toLocaleString("en"))))),
        h("span", { class: "live" }, "live")),
      h("table", { class: "rows", id: "flow-records" },
        h("thead", {}, h("tr", {}, h("th", {}, "time"), h("th", {}, "device"), columns.map((c) => h("th", {}, c)), h("th", { class: "num" }, "seq"))),
        h("tbody", {}, this.records.slice().reverse().map((r) => h("tr", {},
          h("td", { class: "muted", title: dateTime(r.time) }, ago(r.time)),
          h("td", {}, h("a", { href: "#devices/" + encodeURIComponent(r.edge) }, r.edge)),
          (r.n === 1 ? [r.rows[0]] : [r.rows]).flatMap((row) => (Array.isArray(row) && columns.length > 1 ? row : [row]).map((v) => h("td", {}, valueText(v, 80)))),
          h("td", { class: "num muted" }, r.seq + (r.dropped ? ` (${r.dropped} dropped before)` : "")))))),
      h("p", { class: "muted small" }, `the newest ${this.records.length} of ${plural(this.flows[this.flow].records, "record")}`));
  }
}
