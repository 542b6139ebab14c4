// Small helpers shared by the dashboard's modules: building DOM and SVG, formatting values.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

function assign(el, attrs, isSvg) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (!isSvg && (key === "value" || key === "checked" || key === "disabled" || key === "selected")) el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

/** h("div", {class: "x", onclick: f}, child, "text", [more]) → an element. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  assign(el, attrs, false);
  append(el, children);
  return el;
}

/** s("path", {d: "M0 0"}) → an SVG element. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  assign(el, attrs, true);
  append(el, children);
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

// --- formatting -----------------------------------------------------------------------------------

export function isNumber(v) {
  return typeof v === "number" && Number.isFinite(v);
}

/** A number for people: up to 4 significant digits after the point, thousands kept. */
export function num(v, digits = 4) {
  if (!isNumber(v)) return v === null || v === undefined ? "—" : String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e7)) return v.toExponential(2);
  if (a >= 1000) return v.toFixed(1);
  return String(Number(v.toPrecision(digits)));
}

export function kb(v) {
  if (!isNumber(v)) return "—";
  if (v >= 1024 * 1024) return num(v / 1024 / 1024, 3) + " GB";
  if (v >= 1024) return num(v / 1024, 3) + " MB";
  return Math.round(v) + " KB";
}

export function duration(seconds) {
  if (!isNumber(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + " s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + " min" + (s % 60 && m < 10 ? " " + (s % 60) + " s" : "");
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return hrs + " h" + (m % 60 ? " " + (m % 60) + " min" : "");
  return Math.floor(hrs / 24) + " d " + (hrs % 24) + " h";
}

/** "12 s ago" for a Unix time in seconds. */
export function ago(unixSeconds) {
  if (!isNumber(unixSeconds)) return "never";
  const d = Date.now() / 1000 - unixSeconds;
  if (d < 2) return "just now";
  return duration(d) + " ago";
}

export function dateTime(unixSeconds) {
  if (!isNumber(unixSeconds)) return "—";
  const d = new Date(unixSeconds * 1000);
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric",
                                       hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** A result value as short text (the full value goes in the cell's title). */
export function valueText(v, max = 120) {
  let t;
  if (v === null || v === undefined) t = "null";
  else if (typeof v === "number") t = num(v, 6);
  else if (typeof v === "string") t = v;
  else if (Array.isArray(v) && v.every((x) => typeof x === "number" || x === null)) {
    const shown = v.slice(0, 8).map((x) => (x === null ? "null" : num(x))).join(", ");
    t = "[" + shown + (v.length > 8 ? `, … ${v.length} items]` : "]");
  } else t = JSON.stringify(v);
  return t.length > max ? t.slice(0, max - 1) + "…" : t;
}

export function fullText(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** Escape a string as a StreamQL literal. */
export function quote(text) {
  return "'" + String(text).replace(/'/g, "''") + "'";
}

export function plural(n, word, many) {
  return `${n} ${n === 1 ? word : many || word + "s"}`;
}

/** Calls fn at most every `ms` (trailing call kept). */
export function throttle(fn, ms) {
  let timer = null, pending = false;
  return function throttled() {
    if (timer) { pending = true; return; }
    fn();
    timer = setTimeout(function tick() {
      timer = null;
      if (pending) { pending = false; throttled(); }
    }, ms);
  };
}

/** Runs `fn` (which redraws part of `root`), then gives the focus back to the element with the
 * same data-key, so periodic redraws do not take the focus from a keyboard user. */
export function keepFocus(root, fn) {
  const active = document.activeElement;
  const key = active && root.contains(active) && active.dataset ? active.dataset.key : null;
  fn();
  if (key) {
    const again = root.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again && again !== document.activeElement) again.focus({ preventScroll: true });
  }
}

// Periodic redraws wait while a mouse button is down: an element replaced between pointer down
// and up would never get its click.
let pointerDown = false;
const deferred = new Set();
function released() {
  pointerDown = false;
  setTimeout(() => { const fns = [...deferred]; deferred.clear(); for (const fn of fns) fn(); }, 0);  // after the click
}
if (typeof document !== "undefined") {
  document.addEventListener("pointerdown", () => { pointerDown = true; }, true);
  document.addEventListener("pointerup", released, true);
  document.addEventListener("pointercancel", released, true);
}

/** Runs fn now, or (once) just after the mouse button is released. */
export function whenIdle(fn) {
  if (pointerDown) deferred.add(fn); else fn();
}
