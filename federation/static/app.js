// The dashboard's entry point: the token, the views (#devices, #query, #deployments, with
// #devices/{id} and #deployments/{id} for details), periodic refreshes, keyboard shortcuts.
"use strict";

import { Api } from "./api.js";
import { DeploymentsPanel } from "./deployments.js";
import { DevicesPanel } from "./devices.js";
import { QueryPanel } from "./query.js";
import { $, ago, clear, h } from "./util.js";

const REFRESH_MS = 5000;
const VIEWS = ["devices", "query", "deployments"];

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
const tokenInput = $("#token");
const state = { lastOk: null, error: null, devices: null, deployments: null };

const devices = new DevicesPanel($("#view-devices"), api, {
  onSummary: (s) => {
    state.devices = s;
    clear($("#devices-summary"), `${s.online}/${s.total}`);
    $("#devices-summary").title = `${s.online} online of ${s.total} registered`;
  },
  onQuery: (text) => { go("#query"); query.setText(text, { run: true }); },
});
const deployments = new DeploymentsPanel($("#view-deployments"), api, {
  onSummary: (s) => clear($("#deployments-summary"), s.running ? h("span", { class: "live" }, `${s.running} running`) : ""),
});
const query = new QueryPanel($("#view-query"), api, {
  onDeployment: (id, { quiet } = {}) => {
    deployments.refresh().catch(() => {});
    if (quiet) deployments.select(id); else location.hash = "#deployments/" + encodeURIComponent(id);
  },
});

if (/Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent)) {
  for (const k of document.querySelectorAll("kbd")) if (k.textContent === "Ctrl+Enter" || k.textContent === "Ctrl") k.textContent = k.textContent.replace("Ctrl", "⌘");
}

// --- the token ------------------------------------------------------------------------------------
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
  if (!api.token) {  // forgotten: show nothing that came with it
    state.devices = null;
    devices.forget();
    deployments.forget();
    clear($("#devices-summary"));
    clear($("#deployments-summary"));
  }
  refreshAll();
});

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

function drawConnection() {
  if (!api.token) { clear(conn, h("span", { class: "dot off" }), "no token"); return; }
  if (state.error) {
    const text = state.error.status ? `${state.error.kind}` : "unreachable";
    clear(conn, h("span", { class: "dot bad" }), text, state.lastOk ? h("span", { class: "muted" }, ` · last ok ${ago(state.lastOk / 1000)}`) : null);
    conn.title = state.error.message;
    return;
  }
  conn.title = "";
  if (!state.devices) { clear(conn, h("span", { class: "dot off" }), "connecting…"); return; }
  clear(conn, h("span", { class: "dot on" }), `${state.devices.online} of ${state.devices.total} online`,
        h("span", { class: "muted", id: "updated" }, ` · updated ${ago(state.lastOk / 1000)}`));
}

let refreshing = false, again = false;
async function refreshAll() {
  if (refreshing) { again = true; return; }  // once more when this one is done (the token may have changed)
  if (!api.token) { showAuthProblem(null); drawConnection(); return; }
  refreshing = true;
  const token = api.token;
  try {
    await Promise.all([devices.refresh(), deployments.refresh()]);
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
  const [view, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const name = VIEWS.includes(view) ? view : "devices";
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
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
  }
  if (name === "deployments") {
    const id = arg || (deployments.selected ?? deployments.list.find((d) => d.state === "running")?.id ?? deployments.list[0]?.id);
    if (id) deployments.select(String(id));
  }
  if (name === "query") query.chart.render();
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
  const tabs = [...document.querySelectorAll("[role=tab]")];
  const i = tabs.indexOf(document.activeElement);
  if (i < 0 || (event.key !== "ArrowRight" && event.key !== "ArrowLeft")) return;
  event.preventDefault();
  const next = tabs[(i + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
  next.focus();
  location.hash = next.getAttribute("href");
});

document.addEventListener("keydown", (event) => {
  const typing = event.target.closest("input, textarea, select, [contenteditable]");
  if (event.altKey && !event.ctrlKey && !event.metaKey && ["1", "2", "3"].includes(event.key)) {
    event.preventDefault();
    go("#" + VIEWS[Number(event.key) - 1]);
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
window.streamqlDashboard = { api, devices, deployments, query };  // for the console and for tests
