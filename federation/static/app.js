// The dashboard's entry point: the token and its role (GET /v1/me: buttons a token cannot use are
// hidden), the views (#overview, #devices?filters, #devices/{id}, #query, #query/saved/{name},
// #deployments/{id}, #models, #flows/{flow}, #admin), a refresh of the visible view every 5 s,
// honest connection state (data older than two refreshes is greyed under a "Not live" banner),
// keyboard shortcuts.
"use strict";

import { AdminPanel } from "./admin.js";
import { Api } from "./api.js";
import { FlowsPanel, ModelsPanel } from "./catalog.js";
import { DeploymentsPanel } from "./deployments.js";
import { DevicesPanel, viewParams } from "./devices.js";
import { OverviewPanel } from "./overview.js";
import { QueryPanel } from "./query.js";
import { $, ago, clear, h } from "./util.js";

export const REFRESH_MS = 5000;
const STALE_MS = 2 * REFRESH_MS;
const VIEWS = ["overview", "devices", "query", "deployments", "models", "flows", "admin"];
const KEYS = { 0: "overview", 1: "devices", 2: "query", 3: "deployments", 4: "models", 5: "flows", 6: "admin" };

const api = new Api();

// ?token=… once (a link from `streamql demo`): keep it, then take it out of the address bar
{
  const url = new URL(location.href);
  const given = url.searchParams.get("token") || url.searchParams.get("access_token");
  if (given) {
    api.setToken(given);
    url.searchParams.delete("token");
    url.searchParams.delete("access_token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
}

const conn = $("#conn");
const banner = $("#auth-banner");
const staleBanner = $("#stale-banner");
const tokenInput = $("#token");
const state = { lastOk: null, error: null, devices: null, me: null, view: "overview" };
const may = (role) => !!(state.me && state.me.may && state.me.may[role]);

const overview = new OverviewPanel($("#view-overview"), api);
const devices = new DevicesPanel($("#view-devices"), api, {
  onSummary: (s) => {
    state.devices = s;
    clear($("#devices-summary"), `${s.online.toLocaleString("en")}/${s.total.toLocaleString("en")}`);
    $("#devices-summary").title = `${s.online} online of ${s.total} registered`;
  },
  onQuery: (text) => { go("#query"); query.setText(text, { run: true }); },
});
const deployments = new DeploymentsPanel($("#view-deployments"), api, {
  may,
  onSummary: (s) => clear($("#deployments-summary"), s.running ? h("span", { class: "live" }, `${s.running} running`) : ""),
});
const query = new QueryPanel($("#view-query"), api, {
  onDeployment: (id, { quiet } = {}) => {
    deployments.refresh().catch(() => {});
    if (quiet) deployments.select(id); else location.hash = "#deployments/" + encodeURIComponent(id);
  },
});
const models = new ModelsPanel($("#view-models"), api, { may });
const flows = new FlowsPanel($("#view-flows"), api);
const admin = new AdminPanel($("#view-admin"), api);
const PANELS = { overview, devices, deployments, models, flows, admin };

if (/Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent)) {
  for (const k of document.querySelectorAll("kbd")) if (k.textContent === "Ctrl+Enter" || k.textContent === "Ctrl") k.textContent = k.textContent.replace("Ctrl", "⌘");
}

// --- the token and its role ------------------------------------------------------------------------
tokenInput.value = api.token;
$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  api.setToken(tokenInput.value);
});
$("#token-show").addEventListener("click", (event) => {
  const shown = tokenInput.type === "text";
  tokenInput.type = shown ? "password" : "text";
  event.target.textContent = shown ? "show" : "hide";
  event.target.setAttribute("aria-label", shown ? "show the token" : "hide the token");
});
api.onToken(() => {
  tokenInput.value = api.token;
  state.error = null;
  state.me = null;
  state.lastOk = null;
  for (const panel of Object.values(PANELS)) panel.forget();
  deployments.formDrawn = false;
  state.devices = null;
  clear($("#devices-summary"));
  clear($("#deployments-summary"));
  applyRole();
  refreshAll();
});

async function loadMe() {
  if (!api.token || state.me) return;
  state.me = await api.get("/v1/me");
  applyRole();
}

/** Show only what the token may use: an Admin tab for admins, deployment controls for deploy tokens. */
function applyRole() {
  const badge = $("#role");
  if (state.me) {
    clear(badge, state.me.role);
    badge.className = "role-badge role-" + state.me.role;
    badge.title = `this token (${state.me.label || "#" + state.me.token_id}) has the ${state.me.role} role`;
    badge.hidden = false;
  } else badge.hidden = true;
  for (const el of document.querySelectorAll("[data-needs]")) el.hidden = !may(el.dataset.needs);
  if (state.view === "admin" && state.me && !may("admin")) go("#overview");
  if (state.view === "deployments") deployments.loadForm().catch(() => {});
  // what was drawn before the role was known is drawn again with (or without) its buttons
  if (deployments.selected) deployments.renderDetail();
  models.render();
}

function showAuthProblem(err) {
  if (!api.token) {
    clear(banner, h("b", {}, "A token is needed. "),
      "Paste a read, deploy or admin token in the token field above (it is kept in this browser). The first start of a federation writes an admin token to ",
      h("code", {}, "DATA/admin.token"), "; make a read token with ",
      h("code", {}, "streamql federation token create --data DATA --role read"), ".");
  } else if (err && err.status === 401) {
    clear(banner, h("b", {}, "The token was refused (401). "), "It is unknown, revoked or mistyped: paste another one above.");
  } else if (err && err.status === 403) {
    clear(banner, h("b", {}, "This token may not read the fleet (403). "), "A device's token only opens its own connection: use a read, deploy or admin token.");
  } else {
    banner.hidden = true;
    return;
  }
  banner.hidden = false;
}

// --- is what the page shows live? --------------------------------------------------------------------
function drawConnection() {
  const stale = !!(api.token && state.lastOk && Date.now() - state.lastOk > STALE_MS);
  document.body.classList.toggle("stale", stale);
  if (stale) {
    clear(staleBanner, h("b", {}, "Not live. "), `What this page shows is from ${ago(state.lastOk / 1000)}: `,
          state.error ? `${state.error.message}.` : "the federation has not answered since.", " It is greyed until the federation answers again.");
    staleBanner.hidden = false;
  } else staleBanner.hidden = true;
  if (!api.token) { clear(conn, h("span", { class: "dot off" }), "no token"); return; }
  if (state.error) {
    const text = state.error.status ? `${state.error.kind}` : state.error.kind === "Timeout" ? "not answering" : "unreachable";
    clear(conn, h("span", { class: "dot bad" }), text, state.lastOk ? h("span", { class: "muted" }, ` · last ok ${ago(state.lastOk / 1000)}`) : null);
    conn.title = state.error.message;
    return;
  }
  conn.title = "";
  if (!state.devices) { clear(conn, h("span", { class: "dot off" }), "connecting…"); return; }
  clear(conn, h("span", { class: ["dot", stale ? "off" : "on"] }), `${state.devices.online.toLocaleString("en")} of ${state.devices.total.toLocaleString("en")} online`,
        h("span", { class: "muted", id: "updated" }, ` · updated ${ago(state.lastOk / 1000)}`));
}

let refreshing = false, again = false;
async function refreshAll() {
  if (refreshing) { again = true; return; }  // once more when this one is done (the token may have changed)
  if (!api.token) { showAuthProblem(null); drawConnection(); return; }
  refreshing = true;
  const token = api.token;
  try {
    await loadMe();
    const work = [];
    const panel = PANELS[state.view];
    // the header's counts come with every device page; elsewhere a one-row page brings them
    if (state.view !== "devices") work.push(api.get("/v1/edges?limit=0&fields=compact").then((d) => devices.onSummary(d.fleet)));
    if (panel && (panel !== admin || may("admin"))) work.push(panel.refresh());
    // (on the devices view a refresh is one `since=` request, nothing more)
    if (state.view !== "deployments" && state.view !== "devices") work.push(deployments.refreshSummary());
    await Promise.all(work);
    if (state.view === "deployments" && !deployments.selected) {   // it opens on a running one, else the newest
      const id = deployments.list.find((d) => d.state === "running")?.id ?? deployments.list[0]?.id;
      if (id) deployments.select(String(id));
    }
    if (token === api.token) {
      state.error = null;
      state.lastOk = Date.now();
      showAuthProblem(null);
    }
  } catch (err) {
    if (token === api.token) {
      state.error = err;
      showAuthProblem(err);
    }
  } finally {
    refreshing = false;
    drawConnection();
    if (again) { again = false; refreshAll(); }
  }
}

setInterval(() => { if (!document.hidden) refreshAll(); }, REFRESH_MS);
setInterval(drawConnection, 1000);
document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshAll(); });

// --- views ------------------------------------------------------------------------------------------
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const at = hash.indexOf("?");
  const [view, ...rest] = (at < 0 ? hash : hash.slice(0, at)).split("/");
  const name = VIEWS.includes(view) ? view : "overview";
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  const changed = state.view !== name;
  state.view = name;
  for (const v of VIEWS) {
    const on = v === name;
    $("#view-" + v).hidden = !on;
    const tab = $("#tab-" + v);
    tab.setAttribute("aria-selected", String(on));
    tab.classList.toggle("on", on);
    tab.tabIndex = on ? 0 : -1;
  }
  if (name === "devices") {
    if (arg) devices.open(arg); else if (devices.detailId) devices.close();
    if (!arg) devices.useParams(viewParams(location.hash));
    if (changed || !devices.choices) devices.loadChoices();
  }
  if (name === "deployments") {
    deployments.loadForm().catch(() => {});
    const id = arg || (deployments.selected ?? deployments.list.find((d) => d.state === "running")?.id ?? deployments.list[0]?.id);
    if (id) deployments.select(String(id));
  }
  if (name === "query") {
    if (changed) query.loadSaved();
    if (rest[0] === "saved" && rest[1]) query.openSaved(decodeURIComponent(rest.slice(1).join("/")));
    query.chart.render();
  }
  if (name === "flows" && arg) flows.select(arg);
  if (changed && name !== "query" && name !== "devices") refreshAll();
  document.title = "StreamQL · " + name + (arg ? " · " + arg : "");
}
window.addEventListener("hashchange", route);

/** Shows a view at once (hashchange comes later), e.g. to focus something in it. */
function go(hash) {
  if (location.hash === hash) return;
  location.hash = hash;
  route();
}

// tabs: arrow keys move between them
$(".tabs").addEventListener("keydown", (event) => {
  const tabs = [...document.querySelectorAll("[role=tab]")].filter((t) => !t.hidden);
  const i = tabs.indexOf(document.activeElement);
  if (i < 0 || (event.key !== "ArrowRight" && event.key !== "ArrowLeft")) return;
  event.preventDefault();
  const next = tabs[(i + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
  next.focus();
  location.hash = next.getAttribute("href");
});

document.addEventListener("keydown", (event) => {
  const typing = event.target.closest("input, textarea, select, [contenteditable]");
  if (event.altKey && !event.ctrlKey && !event.metaKey && event.key in KEYS) {
    event.preventDefault();
    go("#" + KEYS[event.key]);
    if (event.key === "2") $("#query-text").focus();
    return;
  }
  if (typing) return;
  if (event.key === "/" && !event.ctrlKey && !event.metaKey && !event.altKey) {
    event.preventDefault();
    if (!location.hash.startsWith("#devices")) go("#devices");
    $("#device-filter").focus();
  } else if (event.key === "Escape" && devices.detailId) {
    devices.close();
  }
});

route();
refreshAll().then(() => {
  // with no deployment chosen yet, the deployments view opens on a running one
  if (location.hash.startsWith("#deployments") && !deployments.selected) route();
});
drawConnection();
window.streamqlDashboard = { api, overview, devices, deployments, query, models, flows, admin, state };  // for the console and for tests
