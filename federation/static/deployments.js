// Deployments: GET /v1/deployments (newest first, with counts per device state) and one
// deployment's progress per device (GET /v1/deployments/{id}), polled every second while it runs.
"use strict";

import { $, ago, clear, dateTime, h, keepFocus, plural, whenIdle } from "./util.js";

const STATES = ["done", "installed", "sending", "pending", "skipped", "failed", "rolled_back"];
const LIVE_MS = 1000;

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
  constructor(root, api, { onSummary } = {}) {
    this.root = root;
    this.api = api;
    this.onSummary = onSummary || (() => {});
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
        h("td", {}, h("span", { class: ["pill", "state-" + d.state] }, d.state)),
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
      const detail = await this.api.get("/v1/deployments/" + encodeURIComponent(id) + (unsettled ? "?wait=1" : ""));
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
        onclick: () => { this.stateFilter = s; this.renderDetail(); },
      }, s ? `${s} ${d.counts[s] || 0}` : `all ${total}`)));
    const devices = d.devices.filter((x) => !this.stateFilter || x.state === this.stateFilter);
    const order = { failed: 0, rolled_back: 1, installed: 2, sending: 3, pending: 4, skipped: 5, done: 6 };
    devices.sort((a, b) => (order[a.state] ?? 9) - (order[b.state] ?? 9) || a.id.localeCompare(b.id));
    keepFocus(this.detailBox, () => clear(this.detailBox,
      h("div", { class: "detail-head" },
        h("h2", { id: "deployment-title" }, `#${d.id} `, what(d)),
        h("span", { class: ["pill", "state-" + d.state] }, d.state),
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
      !devices.length ? h("p", { class: "muted empty" }, "no device in this state") : null));
  }
}
