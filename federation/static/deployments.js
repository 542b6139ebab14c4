// Deployments: GET /v1/deployments (newest first, with counts per device state) and one
// deployment's progress per device (GET /v1/deployments/{id}), polled every second while it runs;
// for deploy tokens, a form (waves, abort threshold, wave timeout, rollback on abort) that starts
// only after a preflight, and cancel / abort / retry-failed / rollback buttons.
"use strict";

import { $, ago, clear, dateTime, h, keepFocus, plural, quote, whenIdle } from "./util.js";

const STATE_LABEL = { nothing_selected: "nothing selected" };
const label = (state) => STATE_LABEL[state] || state;

/** The statement the form describes. */
export function deployStatement({ model, version, where, waves, threshold, timeout, rollback }) {
  let text = `deploy model ${quote(model)}` + (version ? ` version ${quote(version)}` : "") + " to Edge e";
  if (where && where.trim()) text += ` where ${where.trim()}`;
  if (Number(waves) > 0) text += ` over ${Number(waves)} waves`;
  if (threshold !== "" && threshold !== null && threshold !== undefined) text += ` abort above ${Number(threshold)} percent`;
  if (Number(timeout) > 0) text += ` wave timeout ${Number(timeout)} seconds`;
  if (rollback) text += " rollback on abort";
  return text + ";";
}

const STATES = ["done", "installed", "sending", "pending", "skipped", "failed", "rolled_back"];
const LIVE_MS = 1000;
const DEVICE_PAGE = 200;   // devices listed at once; the counts are always whole

function progressBar(counts, total) {
  const bar = h("div", { class: "progress", role: "img",
                         "aria-label": STATES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(", ") || "no devices" });
  for (const state of STATES) {
    if (!counts[state]) continue;
    const part = h("span", { class: "seg seg-" + state, title: `${counts[state]} ${state}` });
    part.style.width = (counts[state] / total * 100).toFixed(2) + "%";
    bar.append(part);
  }
  return bar;
}

function totalOf(counts) {
  return Object.values(counts || {}).reduce((a, b) => a + (b || 0), 0);
}

function what(d) {
  return `${d.action} ${d.model}${d.version ? " " + d.version : ""}`;
}

export class DeploymentsPanel {
  constructor(root, api, { onSummary, may } = {}) {
    this.root = root;
    this.api = api;
    this.onSummary = onSummary || (() => {});
    this.may = may || (() => false);
    this.formBox = $("#deploy-form-box", root);
    this.preflight = null;     // {statement, result} of the last preflight
    this.actionError = null;
    this.list = [];
    this.selected = null;
    this.detail = null;
    this.stateFilter = "";
    this.timer = null;
    this.listBox = $("#deployments-list", root);
    this.detailBox = $("#deployment-detail", root);
    this.renderDetail();
  }

  forget() {
    clearTimeout(this.timer);
    this.generation = (this.generation || 0) + 1;
    this.list = [];
    this.selected = this.detail = null;
    clear(this.listBox);
    clear(this.detailBox);
  }

  /** Only the header's "N running" (the view itself is not shown). */
  async refreshSummary() {
    if (!this.api.token) return;
    const data = await this.api.get("/v1/deployments?state=running,pending&limit=100");
    this.onSummary({ running: data.deployments.length });
  }

  async refresh() {
    if (!this.api.token) return;
    const data = await this.api.get("/v1/deployments?limit=50");
    this.list = data.deployments;
    whenIdle(this.listLater || (this.listLater = () => { this.renderList(); if (!this.selected) this.renderDetail(); }));
    this.onSummary({ running: this.list.filter((d) => d.state === "running").length, total: this.list.length });
  }

  renderList() {
    if (!this.list.length) {
      clear(this.listBox, h("p", { class: "muted empty" }, "No deployment yet. Deploy with a statement in the query box (a deploy token), e.g. ",
        h("code", {}, "deploy model 'vib-anomaly' version '1.2.0' to Edge e where region(e) = 'US';")));
      return;
    }
    const rows = this.list.map((d) => {
      const total = totalOf(d.counts);
      return h("tr", { "data-id": d.id, class: d.id === this.selected ? "selected" : null,
                       onclick: (ev) => { if (!ev.target.closest("a")) location.hash = "#deployments/" + d.id; } },
        h("td", {}, h("a", { href: "#deployments/" + d.id, "data-key": "dep:" + d.id }, "#" + d.id)),
        h("td", { class: "what" }, what(d)),
        h("td", {}, h("span", { class: ["pill", "state-" + d.state] }, label(d.state))),
        h("td", { class: "wide" }, progressBar(d.counts, total || 1),
          h("span", { class: "small muted" }, STATES.filter((s) => d.counts[s]).map((s) => `${d.counts[s]} ${s}`).join(" · ") || "no devices")),
        h("td", { class: "muted", title: dateTime(d.created) }, ago(d.created)));
    });
    keepFocus(this.listBox, () => clear(this.listBox, h("table", { class: "deployments", id: "deployments" },
      h("thead", {}, h("tr", {}, h("th", {}, "id"), h("th", {}, "what"), h("th", {}, "state"), h("th", {}, "devices"), h("th", {}, "created"))),
      h("tbody", {}, rows))));
  }

  async select(id) {
    if (this.selected !== id) { this.detail = null; this.stateFilter = ""; }
    this.selected = id;
    for (const tr of this.listBox.querySelectorAll("tr[data-id]")) tr.classList.toggle("selected", tr.dataset.id === id);
    this.renderDetail();
    await this.poll();
  }

  async poll() {
    clearTimeout(this.timer);
    const generation = this.generation = (this.generation || 0) + 1;  // only the newest poll goes on
    const id = this.selected;
    if (!id || !this.api.token) return;
    // while the rollout is unsettled, a long poll: the answer comes when it settles, or after 1 s
    const unsettled = this.detail && this.detail.id === id && !this.detail.settled;
    try {
      // a page of the devices, in the state chosen (a deployment may address thousands)
      const q = new URLSearchParams({ device_limit: String(DEVICE_PAGE) });
      if (this.stateFilter) q.set("device_state", this.stateFilter);
      if (unsettled) q.set("wait", "1");
      const detail = await this.api.get("/v1/deployments/" + encodeURIComponent(id) + "?" + q.toString());
      if (generation !== this.generation) return;
      const wasLive = this.detail && this.detail.state === "running";
      const same = this.detail && JSON.stringify(this.detail) === JSON.stringify(detail);
      this.detail = detail;
      this.error = null;
      if (!same || Date.now() - (this.drawnAt || 0) > 15000) whenIdle(this.detailLater || (this.detailLater = () => this.renderDetail()));
      if (wasLive && detail.state !== "running") this.refresh().catch(() => {});
    } catch (err) {
      if (generation !== this.generation) return;
      this.error = err;
      this.renderDetail();
    }
    // live while the rollout runs: at once again while unsettled (the long poll paces it), every
    // few seconds while it only waits for offline devices, now and then once it is over
    const d = this.detail;
    const delay = !d || this.error ? 5000 : !d.settled ? 100 : d.state === "running" ? LIVE_MS * 3 : 15000;
    this.timer = setTimeout(() => this.poll(), delay);
  }

  renderDetail() {
    if (!this.selected) {
      clear(this.detailBox, this.list.length ? h("p", { class: "muted empty" }, "Choose a deployment to see its progress on every device.") : null);
      return;
    }
    if (this.error && !this.detail) {
      clear(this.detailBox, h("p", { class: "error" }, this.error.status === 404 ? `No deployment ${this.selected}.` : this.error.message));
      return;
    }
    const d = this.detail;
    if (!d) { clear(this.detailBox, h("p", { class: "muted" }, "loading deployment " + this.selected + "…")); return; }
    this.drawnAt = Date.now();
    const total = totalOf(d.counts);
    const live = d.state === "running";
    const filters = h("div", { class: "segmented", role: "group", "aria-label": "show devices in state" },
      ["", ...STATES].map((s) => h("button", {
        type: "button", class: ["seg-button", this.stateFilter === s && "on", s && "st-" + s], "aria-pressed": String(this.stateFilter === s),
        "data-key": "state:" + s,
        disabled: s && !d.counts[s] && this.stateFilter !== s,
        onclick: () => { this.stateFilter = s; this.renderDetail(); this.poll(); },
      }, s ? `${s} ${d.counts[s] || 0}` : `all ${total}`)));
    const devices = d.devices.filter((x) => !this.stateFilter || x.state === this.stateFilter);
    const order = { failed: 0, rolled_back: 1, installed: 2, sending: 3, pending: 4, skipped: 5, done: 6 };
    devices.sort((a, b) => (order[a.state] ?? 9) - (order[b.state] ?? 9) || a.id.localeCompare(b.id));
    keepFocus(this.detailBox, () => clear(this.detailBox,
      h("div", { class: "detail-head" },
        h("h2", { id: "deployment-title" }, `#${d.id} `, what(d)),
        h("span", { class: ["pill", "state-" + d.state], id: "deployment-state" }, label(d.state)),
        live ? h("span", { class: "live", title: d.settled ? "waiting for offline devices; updated every few seconds" : "updated as it happens" },
                 d.settled ? "waiting for offline devices" : "live") : null),
      h("dl", { class: "kv inline" },
        h("dt", {}, "selection"), h("dd", {}, h("code", {}, d.selection || "—")),
        h("dt", {}, "requested by"), h("dd", {}, d.requested_by || "—"),
        h("dt", {}, "created"), h("dd", {}, dateTime(d.created)),
        h("dt", {}, "updated"), h("dd", {}, ago(d.updated)),
        d.waves ? [h("dt", {}, "waves"), h("dd", {}, `${d.waves.current} of ${d.waves.count}` +
                   (d.waves.sizes ? ` (${d.waves.sizes.join(", ")} devices)` : ""))] : null,
        d.abort ? [h("dt", {}, "aborted"), h("dd", {}, d.abort.reason +
                   (d.abort.rollback === "done" ? `; ${plural(d.abort.rolled_back || 0, "device")} rolled back` :
                    d.abort.rollback === "running" ? "; rolling back" : ""))] : null,
        d.failure_threshold !== undefined ? [h("dt", {}, "abort above"), h("dd", {}, `${Math.round(d.failure_threshold * 100)} % failed`)] : null,
        d.waiting_for_offline ? [h("dt", {}, "waiting for"), h("dd", {}, plural(d.waiting_for_offline, "offline device") + " (sent when they reconnect)")] : null),
      d.state === "nothing_selected" ? h("p", { class: "partial", id: "nothing-selected" },
        "The selection matched no device: nothing was sent. It is neither done nor failed.") : null,
      this.actions(d),
      this.actionError ? h("p", { class: "error", id: "action-error" }, `${this.actionError.kind}: ${this.actionError.message}`) : null,
      progressBar(d.counts, total || 1),
      filters,
      h("table", { class: "targets", id: "deployment-devices" },
        h("thead", {}, h("tr", {}, h("th", {}, "device"), h("th", {}, "state"), h("th", {}, "reason"), h("th", {}, "variant"), h("th", { class: "num" }, "wave"), h("th", {}, "updated"))),
        h("tbody", {}, devices.map((x) => h("tr", { "data-device": x.id, "data-state": x.state },
          h("td", {}, h("a", { href: "#devices/" + encodeURIComponent(x.id), "data-key": "target:" + x.id }, x.id)),
          h("td", {}, h("span", { class: ["pill", "st-" + x.state] }, x.state)),
          h("td", { class: "reason" }, x.reason || ""),
          h("td", {}, x.variant || ""),
          h("td", { class: "num" }, x.wave ?? ""),
          h("td", { class: "muted" }, ago(x.updated)))))),
      !devices.length ? h("p", { class: "muted empty" }, "no device in this state") : null,
      d.devices_total > d.devices.length ? h("p", { class: "muted small", id: "devices-more" },
        `the first ${d.devices.length} of ${d.devices_total} devices${this.stateFilter ? " " + this.stateFilter : ""}`) : null));
  }
}

// --- operator actions and the deployment form (deploy tokens) ----------------------------------------
Object.assign(DeploymentsPanel.prototype, {
  actions(d) {
    if (!this.may("deploy")) return null;
    const running = d.state === "running" || d.state === "pending";
    const act = (what, body) => async () => {
      const question = { cancel: `Cancel deployment #${d.id}? Nothing more is sent.`,
                         abort: `Abort deployment #${d.id}${body && body.rollback ? " and roll back the devices that switched" : ""}?`,
                         retry: `Retry the ${d.counts.failed} failed devices of #${d.id} in a new deployment?`,
                         rollback: `Roll back the devices #${d.id} brought ${d.version} to?` }[what];
      if (!confirm(question)) return;
      try {
        const answer = await this.api.post(`/v1/deployments/${encodeURIComponent(d.id)}/${what}`, body || {});
        this.actionError = null;
        await this.refresh();
        if (answer.deployment_id) location.hash = "#deployments/" + answer.deployment_id;
        else { this.detail = answer; this.renderDetail(); }
      } catch (err) { this.actionError = err; this.renderDetail(); }
    };
    const buttons = [];
    if (running) {
      buttons.push(h("button", { type: "button", id: "deployment-cancel", onclick: act("cancel") }, "Cancel"));
      if (!d.abort) {
        buttons.push(h("button", { type: "button", id: "deployment-abort", onclick: act("abort", { rollback: false }) }, "Abort"));
        if (d.action === "deploy") buttons.push(h("button", { type: "button", id: "deployment-abort-rollback", class: "danger", onclick: act("abort", { rollback: true }) }, "Abort and roll back"));
      }
    } else {
      if (d.counts.failed) buttons.push(h("button", { type: "button", id: "deployment-retry", onclick: act("retry") }, `Retry ${d.counts.failed} failed`));
      if (d.action === "deploy" && d.counts.done) buttons.push(h("button", { type: "button", id: "deployment-rollback", onclick: act("rollback") }, "Roll back"));
    }
    return buttons.length ? h("div", { class: "toolbar actions", "data-needs": "deploy" }, buttons) : null;
  },

  async loadForm() {
    if (!this.may("deploy")) { clear(this.formBox); this.formBox.hidden = true; return; }
    this.formBox.hidden = false;
    if (this.formDrawn) return;
    let bundles = [];
    try { bundles = (await this.api.get("/v1/models")).models; } catch { /* an empty list */ }
    this.bundles = bundles;
    this.formDrawn = true;
    this.drawForm();
  },

  formValues() {
    const f = this.form;
    return { model: f.model.value, version: f.version.value, where: f.where.value, waves: f.waves.value,
             threshold: f.threshold.value, timeout: f.timeout.value, rollback: f.rollback.checked };
  },

  drawForm() {
    const names = [...new Set(this.bundles.map((b) => b.name))].sort();
    const versions = (name) => this.bundles.filter((b) => b.name === name).map((b) => b.version).reverse();
    const changed = () => { this.preflight = null; this.drawPreflight(); };
    this.form = h("form", { class: "deploy-form", id: "deploy-form", onsubmit: (e) => { e.preventDefault(); this.start(); }, oninput: changed },
      h("label", {}, "model ", h("select", { name: "model", onchange: (e) => {
        clear(this.form.version, versions(e.target.value).map((v) => h("option", { value: v }, v)));
      } }, names.map((n) => h("option", { value: n }, n)))),
      h("label", {}, "version ", h("select", { name: "version" }, versions(names[0]).map((v) => h("option", { value: v }, v)))),
      h("label", { class: "wide" }, "to Edge e where ", h("input", { name: "where", type: "text", placeholder: "region(e) = 'EU' (all devices when empty)", spellcheck: "false" })),
      h("label", {}, "waves ", h("input", { name: "waves", type: "number", min: "1", max: "100", value: "3" })),
      h("label", {}, "abort above ", h("input", { name: "threshold", type: "number", min: "0", max: "100", value: "10" }), " % failed"),
      h("label", {}, "wave timeout ", h("input", { name: "timeout", type: "number", min: "1", value: "300" }), " s"),
      h("label", { class: "check" }, h("input", { name: "rollback", type: "checkbox" }), " rollback on abort"),
      h("button", { type: "button", id: "deploy-preflight", onclick: () => this.runPreflight(), disabled: !names.length }, "Preflight"),
      h("button", { type: "submit", class: "primary", id: "deploy-start", disabled: true }, "Start deployment"));
    this.preflightBox = h("div", { class: "preflight", id: "preflight" });
    clear(this.formBox, h("details", { class: "card", open: true }, h("summary", {}, "New deployment"),
      names.length ? this.form : h("p", { class: "muted" }, "Upload a bundle first (Models)."), this.preflightBox));
  },

  async runPreflight() {
    const statement = deployStatement(this.formValues());
    clear(this.preflightBox, h("p", { class: "muted" }, "checking which devices it would reach…"));
    try {
      const result = await this.api.post("/v1/deployments/preflight", { statement });
      this.preflight = { statement, result };
    } catch (err) {
      this.preflight = { statement, error: err };
    }
    this.drawPreflight();
  },

  drawPreflight() {
    if (!this.preflightBox) return;
    const start = $("#deploy-start", this.form);
    const p = this.preflight;
    if (start) start.disabled = !(p && p.result && deployStatement(this.formValues()) === p.statement);
    if (!p) { clear(this.preflightBox, h("p", { class: "muted small" }, "A preflight shows what it would do; then it can start.")); return; }
    if (p.error) { clear(this.preflightBox, h("p", { class: "error" }, `${p.error.kind}: ${p.error.message}`)); return; }
    const r = p.result, c = r.counts;
    clear(this.preflightBox,
      h("p", { class: "preflight-line" }, h("code", {}, p.statement)),
      h("ul", { class: "preflight-counts" },
        h("li", { "data-k": "selected" }, h("b", {}, r.selected), " selected"),
        h("li", { "data-k": "install" }, h("b", {}, c.install), " install now"),
        h("li", { "data-k": "wait" }, h("b", {}, c.wait), " wait (offline)"),
        h("li", { "data-k": "skip" }, h("b", {}, c.skip), " skip"),
        h("li", { "data-k": "already" }, h("b", {}, c.already), " already there"),
        h("li", { "data-k": "likely_to_fail", class: c.likely_to_fail ? "bad" : null }, h("b", {}, c.likely_to_fail), " likely to fail")),
      Object.entries(r.skip_reasons).map(([why, n]) => h("p", { class: "muted small" }, `skip (${n}): ${why}`)),
      r.devices.likely_to_fail.map((x) => h("p", { class: "small error" }, `${x.id} refused this change before: ${x.reason}`)),
      r.selected === 0 ? h("p", { class: "partial" }, "It selects no device: it would end as nothing selected.") : null);
  },

  async start() {
    const p = this.preflight;
    if (!p || !p.result) return;
    const statement = p.statement;
    try {
      const resp = await fetch("/v1/query", { method: "POST", cache: "no-store",
        headers: this.api.headers({ "Content-Type": "application/json", Accept: "application/x-ndjson" }),
        body: JSON.stringify({ query: statement }) });
      const text = await resp.text();
      const last = JSON.parse(text.trim().split("\n").pop() || "{}");
      if (!resp.ok || last.error) throw Object.assign(new Error((last.error || {}).message || `HTTP ${resp.status}`), { kind: (last.error || {}).kind || "Error" });
      this.preflight = null;
      this.drawPreflight();
      await this.refresh();
      location.hash = "#deployments/" + last.deployment_id;
    } catch (err) {
      clear(this.preflightBox, h("p", { class: "error" }, `${err.kind}: ${err.message}`));
    }
  },
});
