// Admin (admin tokens only): tokens — list (never their secrets), create (the secret shown once),
// revoke — and provisioning a device, which gives its edge.toml to copy.
"use strict";

import { $, ago, clear, dateTime, h } from "./util.js";

function copyButton(text, id) {
  return h("button", { type: "button", class: "small", id, onclick: async (e) => {
    try { await navigator.clipboard.writeText(text); e.target.textContent = "copied"; } catch { e.target.textContent = "select and copy"; }
  } }, "copy");
}

/** `region=EU` lines (or a JSON object) → an object; numbers and true/false as such. */
export function parsePairs(text) {
  text = text.trim();
  if (!text) return {};
  if (text.startsWith("{")) return JSON.parse(text);
  const out = {};
  for (const line of text.split(/[\n,]+/)) {
    if (!line.trim()) continue;
    const at = line.indexOf("=");
    if (at < 1) throw new Error(`"${line.trim()}" is not key=value`);
    const key = line.slice(0, at).trim(), raw = line.slice(at + 1).trim();
    out[key] = /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw === "true" ? true : raw === "false" ? false : raw;
  }
  return out;
}

export class AdminPanel {
  constructor(root, api) {
    this.root = root;
    this.api = api;
    this.box = $("#admin", root);
    this.tokens = [];
    this.made = null;          // the token just created: shown once
    this.provisioned = null;   // the device just provisioned: its config
    this.error = null;
    this.asked = 0;            // refreshes asked for: an older answer arriving late is dropped
  }

  forget() { this.tokens = []; this.made = this.provisioned = null; clear(this.box); }

  async refresh() {
    if (!this.api.token) return;
    const asked = ++this.asked;
    const tokens = (await this.api.get("/v1/tokens?devices=false")).tokens;
    if (asked !== this.asked) return;  // the periodic refresh's list, asked before a create, would hide the new token
    this.tokens = tokens;
    this.render();
  }

  async createToken(form) {
    try {
      this.made = await this.api.post("/v1/tokens", { role: form.role.value, label: form.label.value });
      this.error = null;
      form.label.value = "";
      const { token, ...record } = this.made;  // listed at once, even if the list's refresh fails
      this.tokens = [...this.tokens.filter((t) => t.id !== record.id), record];
    } catch (err) { this.error = err; }
    this.render();
    await this.refresh();
  }

  async revoke(id) {
    try {
      await this.api.delete("/v1/tokens/" + id);
      this.error = null;
      this.tokens = this.tokens.filter((t) => t.id !== id);
    } catch (err) { this.error = err; }
    if (this.made && this.made.id === id) this.made = null;
    this.render();
    await this.refresh();
  }

  async provision(form) {
    try {
      const capabilities = {};
      if (form.ram.value) capabilities.ram_kb = Math.round(Number(form.ram.value) * 1024);
      this.provisioned = await this.api.post("/v1/edges", { id: form.id.value.trim(), metadata: parsePairs(form.metadata.value), capabilities });
      this.error = null;
      form.reset();
    } catch (err) { this.error = err instanceof Error && !err.kind ? { kind: "BadRequest", message: err.message } : err; }
    this.render();
  }

  render() {
    const tokenForm = h("form", { class: "inline-form", id: "token-create", onsubmit: (e) => { e.preventDefault(); this.createToken(e.target); } },
      h("label", {}, "role ", h("select", { name: "role" }, ["read", "deploy", "admin"].map((r) => h("option", { value: r }, r)))),
      h("label", {}, "label ", h("input", { name: "label", type: "text", placeholder: "grafana", maxlength: "200" })),
      h("button", { type: "submit", class: "primary" }, "Create token"));
    const made = this.made ? h("div", { class: "once", id: "token-made" },
      h("p", {}, h("b", {}, `Token #${this.made.id} (${this.made.role}). `), "It is shown only this once: copy it now."),
      h("pre", { class: "secret" }, this.made.token), copyButton(this.made.token, "copy-token"),
      h("button", { type: "button", class: "small ghost", onclick: () => { this.made = null; this.render(); } }, "done")) : null;
    const tokens = h("table", { class: "compact", id: "tokens" },
      h("thead", {}, h("tr", {}, h("th", {}, "id"), h("th", {}, "role"), h("th", {}, "label"), h("th", {}, "created"), h("th", {}, ""))),
      h("tbody", {}, this.tokens.map((t) => h("tr", { "data-token": String(t.id) },
        h("td", {}, "#" + t.id), h("td", {}, h("span", { class: "pill role-" + t.role }, t.role)), h("td", {}, t.label || "—"),
        h("td", { class: "muted", title: dateTime(t.created) }, ago(t.created)),
        h("td", {}, h("button", { type: "button", class: "small danger", "data-revoke": String(t.id),
                                  onclick: () => { if (confirm(`Revoke token #${t.id} (${t.label || t.role})? Its connections close at once.`)) this.revoke(t.id); } }, "revoke"))))));
    const provisionForm = h("form", { class: "stack-form", id: "provision", onsubmit: (e) => { e.preventDefault(); this.provision(e.target); } },
      h("label", {}, "device id ", h("input", { name: "id", type: "text", required: true, placeholder: "wl-0042", pattern: "[A-Za-z0-9][A-Za-z0-9._:@\\-]{0,127}" })),
      h("label", {}, "metadata ", h("textarea", { name: "metadata", rows: "3", placeholder: "region=EU\nkind=wheel loader\nsite=kiruna" })),
      h("label", {}, "RAM (MB) ", h("input", { name: "ram", type: "number", min: "1", placeholder: "512" })),
      h("button", { type: "submit", class: "primary" }, "Provision"));
    const config = this.provisioned ? h("div", { class: "once", id: "provisioned" },
      h("p", {}, h("b", {}, `${this.provisioned.id} is registered. `), "Its edge.toml holds its token, shown only this once: copy it to the device, then run ",
        h("code", {}, "streamql edge --config edge.toml"), "."),
      h("pre", { class: "secret", id: "edge-config" }, this.provisioned.config), copyButton(this.provisioned.config, "copy-config"),
      h("a", { class: "small", href: "#devices/" + encodeURIComponent(this.provisioned.id) }, " show the device")) : null;
    clear(this.box,
      this.error ? h("p", { class: "error", id: "admin-error" }, `${this.error.kind}: ${this.error.message}`) : null,
      h("div", { class: "admin-grid" },
        h("section", { class: "card" }, h("h3", {}, "Tokens"), tokenForm, made, tokens),
        h("section", { class: "card" }, h("h3", {}, "Provision a device"), provisionForm, config)));
  }
}
