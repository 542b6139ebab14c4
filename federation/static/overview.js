// The overview: online / offline / missing, breakdowns by region, kind and model version, the
// devices needing attention, running and failed deployments, recent alerts. Every number is a
// link to the devices it counts (a devices view with its filters in the address).
"use strict";

import { $, ago, clear, h, plural, valueText } from "./util.js";

const ATTENTION_HELP = {
  "low battery": "battery under 20 %", errors: "its last health report lists errors", restarts: "restarted 3 times or more",
  "buffer drops": "its buffer dropped records while offline", "dropped link": "it reconnected to the federation",
};

export function devicesLink(filters) {
  const q = new URLSearchParams(filters).toString();
  return "#devices" + (q ? "?" + q : "");
}

function countLink(n, filters, attrs = {}) {
  return h("a", { href: devicesLink(filters), class: "count-link", "data-count": String(n), ...attrs }, n.toLocaleString("en"));
}

function bars(title, counts, filtersOf, id) {
  const entries = Object.entries(counts || {}).sort(([a, x], [b, y]) => y - x || a.localeCompare(b));
  const max = Math.max(1, ...entries.map(([, n]) => n));
  return h("section", { class: "card breakdown", id },
    h("h3", {}, title),
    entries.length ? h("table", { class: "bars" }, h("tbody", {}, entries.slice(0, 12).map(([value, n]) => {
      const fill = h("span", { class: "hbar-fill" });
      fill.style.width = (n / max * 100).toFixed(1) + "%";
      return h("tr", { "data-value": value },
        h("th", { scope: "row", title: value }, value),
        h("td", { class: "hbar-cell" }, h("span", { class: "hbar" }, fill)),
        h("td", { class: "num" }, countLink(n, filtersOf(value))));
    }))) : h("p", { class: "muted" }, "none"),
    entries.length > 12 ? h("p", { class: "muted small" }, `and ${entries.length - 12} more`) : null);
}

export class OverviewPanel {
  constructor(root, api) {
    this.root = root;
    this.api = api;
    this.box = $("#overview", root);
    this.data = null;
  }

  forget() {
    this.data = null;
    clear(this.box);
  }

  async refresh() {
    if (!this.api.token) return;
    const [summary, attention, deployments, flows] = await Promise.all([
      this.api.get("/v1/edges/summary"),
      this.api.get("/v1/edges?attention=any&fields=compact&limit=8&sort=-attention"),
      this.api.get("/v1/deployments?state=running,failed,aborted&limit=8"),
      this.api.get("/v1/flows"),
    ]);
    const names = Object.entries(flows.flows || {}).sort(([, a], [, b]) => b.last_id - a.last_id).map(([name]) => name);
    const alertsFlow = names.includes("alerts") ? "alerts" : names[0];
    const alerts = alertsFlow ? await this.api.get(`/v1/flows/${encodeURIComponent(alertsFlow)}?newest=8`) : null;
    this.data = { summary, attention, deployments: deployments.deployments, flows: flows.flows, alertsFlow, alerts };
    this.render();
  }

  render() {
    const d = this.data;
    if (!d) return;
    const s = d.summary;
    const tile = (status, label, cls, help) => h("a", { class: ["tile", cls], href: devicesLink(status ? { status } : {}), id: "tile-" + (status || "total"),
                                                       "data-count": String(status ? s.status[status] : s.total), title: help },
      h("span", { class: "tile-n" }, (status ? s.status[status] : s.total).toLocaleString("en")), h("span", { class: "tile-label" }, label));
    const models = [];
    for (const [model, versions] of Object.entries(s.models || {})) {
      for (const [version, n] of Object.entries(versions)) models.push([`${model} ${version}`, n, { model, version }]);
    }
    const modelCounts = Object.fromEntries(models.map(([k, n]) => [k, n]));
    const modelFilters = Object.fromEntries(models.map(([k, , f]) => [k, f]));
    clear(this.box,
      h("div", { class: "tiles" },
        tile("", "registered", "total", "every registered device"),
        tile("online", "online", "online", "connected now"),
        tile("offline", "offline", "offline", "not connected, seen within the last hour"),
        tile("missing", "missing", "missing", "not seen for more than an hour, or never"),
        h("a", { class: ["tile", s.needing_attention ? "attention" : ""], href: devicesLink({ attention: "any" }), id: "tile-attention",
                 "data-count": String(s.needing_attention) },
          h("span", { class: "tile-n" }, s.needing_attention.toLocaleString("en")), h("span", { class: "tile-label" }, "need attention"))),
      h("div", { class: "overview-grid" },
        bars("By region", s.metadata.region, (v) => ({ "meta.region": v }), "by-region"),
        bars("By kind", s.metadata.kind, (v) => ({ "meta.kind": v }), "by-kind"),
        bars("By model version", modelCounts, (k) => modelFilters[k], "by-model"),
        this.attentionCard(s, d.attention),
        this.deploymentsCard(d.deployments),
        this.alertsCard(d)));
  }

  attentionCard(s, list) {
    return h("section", { class: "card", id: "attention" },
      h("h3", {}, "Needing attention"),
      h("ul", { class: "reasons" }, Object.entries(s.attention).map(([reason, n]) => h("li", { "data-reason": reason, title: ATTENTION_HELP[reason] },
        h("span", { class: ["chip", "attention", !n && "none"] }, reason), countLink(n, { attention: reason })))),
      list.edges.length ? h("table", { class: "compact", id: "attention-devices" }, h("tbody", {}, list.edges.map((e) => h("tr", {},
        h("td", {}, h("span", { class: ["dot", e.status === "online" ? "on" : e.status === "missing" ? "bad" : "off"] }),
          h("a", { href: "#devices/" + encodeURIComponent(e.id) }, e.id)),
        h("td", { class: "muted small" }, e.attention.join(", ")))))) : h("p", { class: "muted" }, "Every device looks fine."),
      list.total > list.edges.length ? h("p", { class: "small" }, h("a", { href: devicesLink({ attention: "any" }) }, `all ${list.total} →`)) : null);
  }

  deploymentsCard(list) {
    return h("section", { class: "card", id: "overview-deployments" },
      h("h3", {}, "Deployments running or failed"),
      list.length ? h("table", { class: "compact" }, h("tbody", {}, list.map((x) => h("tr", {},
        h("td", {}, h("a", { href: "#deployments/" + x.id }, "#" + x.id)),
        h("td", {}, `${x.action} ${x.model}${x.version ? " " + x.version : ""}`),
        h("td", {}, h("span", { class: ["pill", "state-" + x.state] }, x.state.replace("_", " "))),
        h("td", { class: "muted small" }, ["done", "failed", "pending", "skipped"].filter((k) => x.counts[k]).map((k) => `${x.counts[k]} ${k}`).join(" · ")))))) :
        h("p", { class: "muted" }, "None running, none failed."));
  }

  alertsCard(d) {
    const records = d.alerts ? d.alerts.records.slice().reverse() : [];
    const info = d.alertsFlow ? d.flows[d.alertsFlow] : null;
    return h("section", { class: "card", id: "recent-alerts" },
      h("h3", {}, d.alertsFlow ? `Recent ${d.alertsFlow}` : "Recent alerts",
        info ? h("a", { class: "small", href: "#flows/" + encodeURIComponent(d.alertsFlow) }, ` ${plural(info.records, "record")} →`) : null),
      records.length ? h("table", { class: "compact" }, h("tbody", {}, records.map((r) => h("tr", {},
        h("td", {}, h("a", { href: "#devices/" + encodeURIComponent(r.edge) }, r.edge)),
        h("td", { class: "mono small" }, valueText(r.rows.length === 1 ? r.rows[0] : r.rows, 60)),
        h("td", { class: "muted small" }, ago(r.time)))))) :
        h("p", { class: "muted" }, "No record published yet."));
  }
}
