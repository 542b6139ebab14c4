// A live chart drawn as inline SVG. Rows go in as they arrive; the picture is redrawn at most a
// few times a second.
//
// What is plotted follows the shell's `//plot:` charts (streamql/shell/plots.py): numbers (Integer,
// Real, Boolean, the value of a Timeval) and numeric vectors. A scalar column is a series over time
// (arrival time, or the row's own Time / Timeval time), one series per device when a key column
// such as id(e) is selected; a vector column is a series over its index, replaced by each new row.
"use strict";

import { clear, h, isNumber, keepFocus, num, s, throttle } from "./util.js";

export const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777",
                        "#65a30d", "#ea580c", "#4f46e5", "#0d9488", "#9333ea", "#b45309", "#e11d48"];
const MAX_POINTS = 2000;   // kept per series (the oldest are dropped)
const MAX_SERIES = 200;    // drawn; more are counted in the legend
const NUMERIC_TYPES = new Set(["Real", "Integer", "Number", "Boolean"]);

/** The plottable number in a value, or null. */
export function numberOf(v) {
  if (typeof v === "number") return Number.isFinite(v) ? v : null;
  if (typeof v === "boolean") return v ? 1 : 0;
  if (v && typeof v === "object" && !Array.isArray(v) && "value" in v && "time" in v) return numberOf(v.value);
  return null;
}

function vectorOf(v) {
  if (v && typeof v === "object" && !Array.isArray(v) && "value" in v && "time" in v) v = v.value;
  return Array.isArray(v) && v.length && v.every((x) => x === null || typeof x === "number") ? v : null;
}

function timeOf(v) {
  if (typeof v === "string" && /^\d{4}-\d\d-\d\dT/.test(v)) {
    const t = Date.parse(v);
    return Number.isNaN(t) ? null : t / 1000;
  }
  if (v && typeof v === "object" && "time" in v) return timeOf(v.time);
  return null;
}

/**
 * How a result is plotted, from its columns, types and first rows: {key, values: [{index, name,
 * vector}], time, plottable}. `key` is the id(e) column (or the first text column), `time` a Time
 * column giving the x of each row.
 */
export function planChart(columns, types, rows) {
  const sample = (i) => { for (const r of rows || []) if (r[i] !== null && r[i] !== undefined) return r[i]; return undefined; };
  let key = columns.findIndex((c) => /^id\(\s*\w+\s*\)$/i.test(c));
  let time = -1;
  const values = [];
  columns.forEach((name, i) => {
    const type = types[i] || "";
    const v = sample(i);
    if (i === key) return;
    if (type === "Time" || (type === "Object" && timeOf(v) !== null && typeof v === "string")) {
      if (time < 0) time = i;
      return;
    }
    if (type.startsWith("Vector") || vectorOf(v)) {
      if (/^Vector( of (Real|Integer|Number))?$/.test(type) || vectorOf(v)) values.push({ index: i, name, vector: true });
      return;
    }
    if (NUMERIC_TYPES.has(type) || /^Timeval of (Real|Integer|Number)$/.test(type) ||
        (type === "Object" || type === "") && numberOf(v) !== null) {
      values.push({ index: i, name, vector: false, timeval: type.startsWith("Timeval") });
    }
  });
  if (key < 0) {  // else the first text column names the series
    key = columns.findIndex((c, i) => i !== time && !values.some((v) => v.index === i) &&
                                      (types[i] === "Charstring" || (types[i] === "Object" || !types[i]) && typeof sample(i) === "string"));
  }
  const scalars = values.filter((v) => !v.vector);
  return { key, time, values: scalars.length ? scalars : values, vector: !scalars.length && values.length > 0,
           plottable: values.length > 0, columns };
}

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
}

function ticks(lo, hi, count, whole = false) {
  if (!(hi > lo)) return [lo];
  let step = niceStep(hi - lo, count);
  if (whole) step = Math.max(1, Math.round(step));   // counts: no fractional ticks
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

function clockLabel(t) {
  const d = new Date(t * 1000);
  return d.toLocaleTimeString(undefined, { hour12: false });
}

function elapsedLabel(t) {
  if (Math.abs(t) < 60) return num(t, 3) + " s";
  const m = Math.floor(t / 60), sec = Math.round(t - m * 60);
  return `${m}:${String(sec).padStart(2, "0")}`;
}

export class Chart {
  constructor(root) {
    this.root = root;
    this.figure = h("div", { class: "chart-figure" });
    this.legend = h("div", { class: "legend", role: "list" });
    this.tooltip = h("div", { class: "chart-tip", hidden: true });
    root.append(this.figure, this.tooltip, this.legend);
    this.schedule = throttle(() => this.render(), 200);
    this.resizeObserver = new ResizeObserver(() => this.schedule());
    this.resizeObserver.observe(root);
    this.resetButton = h("button", { type: "button", class: "small chart-reset", id: "chart-reset", hidden: true,
                                     onclick: () => { this.zoom = null; this.resetButton.hidden = true; this.render(); } }, "reset zoom");
    root.append(this.resetButton);
    this.figure.addEventListener("mousemove", (e) => { this.drag(e); this.hover(e); });
    this.figure.addEventListener("mouseleave", () => { this.tooltip.hidden = true; this.cursor = null; this.render(); });
    this.figure.addEventListener("mousedown", (e) => this.startDrag(e));
    window.addEventListener("mouseup", (e) => this.endDrag(e));
    this.reset(null);
  }

  // --- drag to zoom (lines and dots): the x range chosen stays until "reset zoom" ------------------
  pxOf(event) {
    return event.clientX - this.figure.getBoundingClientRect().left;
  }

  startDrag(event) {
    const g = this.geometry;
    if (!g || this.style === "bar" || event.button !== 0) return;
    const px = this.pxOf(event);
    if (px < g.m.left || px > g.m.left + g.pw) return;
    event.preventDefault();
    this.dragging = { from: px, to: px };
  }

  drag(event) {
    if (!this.dragging) return;
    const g = this.geometry;
    this.dragging.to = Math.max(g.m.left, Math.min(g.m.left + g.pw, this.pxOf(event)));
    this.schedule();
  }

  endDrag() {
    const d = this.dragging;
    this.dragging = null;
    if (!d || !this.geometry) return;
    const g = this.geometry;
    if (Math.abs(d.to - d.from) >= 6) {
      const x = (px) => g.b.x0 + (px - g.m.left) / g.pw * (g.b.x1 - g.b.x0);
      this.zoom = { x0: x(Math.min(d.from, d.to)), x1: x(Math.max(d.from, d.to)) };
      this.resetButton.hidden = false;
    }
    this.render();
  }

  /** Start over for a new result: plan from planChart, style "line" | "scatter" | "bar". */
  reset(plan, style = "line") {
    this.plan = plan;
    this.style = style;
    this.series = new Map();
    this.points = 0;
    this.t0 = performance.now() / 1000;
    this.hiddenCount = 0;
    this.cursor = null;
    this.legendSignature = null;
    this.zoom = null;
    this.dragging = null;
    if (this.resetButton) this.resetButton.hidden = true;
    this.render();
  }

  seriesFor(key) {
    let series = this.series.get(key);
    if (!series) {
      if (this.series.size >= MAX_SERIES) { this.hiddenCount++; return null; }
      series = { name: key, color: PALETTE[this.series.size % PALETTE.length],
                 dash: this.series.size >= PALETTE.length ? "6 3" : null, xs: [], ys: [], hidden: false };
      this.series.set(key, series);
    }
    return series;
  }

  add(rows) {
    const plan = this.plan;
    if (!plan || !plan.plottable) return;
    const now = performance.now() / 1000 - this.t0;
    const arrived = new Map();  // series → the values that came in this batch without a time of their own
    for (const row of rows) {
      const keyText = plan.key >= 0 ? String(row[plan.key]) : "";
      const rowTime = plan.time >= 0 ? timeOf(row[plan.time]) : null;
      for (const col of plan.values) {
        const name = keyText && plan.values.length > 1 ? `${keyText} · ${col.name}` : keyText || col.name;
        const series = this.seriesFor(name);
        if (!series) continue;
        const value = row[col.index];
        if (col.vector) {
          const vec = vectorOf(value);
          if (!vec) continue;
          this.points += vec.length - series.ys.length;
          series.xs = vec.map((_, i) => i);
          series.ys = vec.map((x) => (isNumber(x) ? x : null));
          continue;
        }
        const y = numberOf(value);
        const x = col.timeval ? (timeOf(value) ?? rowTime) : rowTime;
        if (x !== null) this.push(series, x, y);
        else if (arrived.has(series)) arrived.get(series).push(y);
        else arrived.set(series, [y]);
      }
    }
    // Values that arrive together (an edge sends its readings in batches) are spread over the time
    // since the series' previous point (at most a second), so a batch is not drawn as a vertical jump.
    for (const [series, ys] of arrived) {
      const last = series.xs.length ? series.xs[series.xs.length - 1] : null;
      const start = last === null ? now - 0.25 : Math.max(last, now - 1);
      ys.forEach((y, i) => this.push(series, ys.length === 1 && last === null ? now : start + (now - start) * (i + 1) / ys.length, y));
    }
    this.schedule();
  }

  push(series, x, y) {
    series.xs.push(x); series.ys.push(y);
    this.points++;
    if (series.xs.length > MAX_POINTS) { series.xs.shift(); series.ys.shift(); this.points--; }
  }

  get absoluteTime() {
    return this.plan && (this.plan.time >= 0 || this.plan.values.some((v) => v.timeval));
  }

  bounds() {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    const zoom = this.style === "bar" ? null : this.zoom;
    for (const series of this.series.values()) {
      if (series.hidden) continue;
      const { xs, ys } = series;
      for (let i = 0; i < xs.length; i++) {
        if (ys[i] === null) continue;
        if (zoom && (xs[i] < zoom.x0 || xs[i] > zoom.x1)) continue;
        if (xs[i] < x0) x0 = xs[i]; if (xs[i] > x1) x1 = xs[i];
        if (ys[i] < y0) y0 = ys[i]; if (ys[i] > y1) y1 = ys[i];
      }
    }
    if (x0 === Infinity) return null;
    if (this.style === "bar") { y0 = Math.min(0, y0); y1 = Math.max(0, y1); }
    if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    const pad = (y1 - y0) * 0.06;
    if (zoom) { x0 = zoom.x0; x1 = zoom.x1; }
    if (x1 === x0) { x1 = x0 + 1; }
    return { x0, x1, y0: y0 - (this.style === "bar" && y0 === 0 ? 0 : pad), y1: y1 + pad };
  }

  /** Whether every value drawn is a whole number (counts): then so are the ticks. */
  wholeValues() {
    for (const series of this.series.values()) {
      if (series.hidden) continue;
      for (const y of series.ys) if (y !== null && !Number.isInteger(y)) return false;
    }
    return true;
  }

  axisTitles() {
    const plan = this.plan;
    const names = plan.values.map((v) => v.name);
    const y = names.length === 1 ? names[0] : names.length <= 3 ? names.join(", ") : "value";
    const keyName = plan.key >= 0 && plan.columns ? plan.columns[plan.key] : null;
    const x = this.style === "bar" ? (keyName || "") : plan.vector ? "index" : this.absoluteTime ? "time" : "seconds since the start";
    return { x, y };
  }

  render() {
    const width = Math.max(300, Math.floor(this.root.clientWidth || 800));
    const height = Math.max(220, Math.min(420, Math.round(width * 0.36)));
    const svg = s("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                           "aria-label": "live chart of the query's numeric columns" });
    svg.dataset.points = String(this.points);
    svg.dataset.series = String(this.series.size);
    this.geometry = null;
    const b = this.bounds();
    if (!b) {
      svg.append(s("text", { x: width / 2, y: height / 2, class: "chart-empty", "text-anchor": "middle" },
                   this.plan && !this.plan.plottable ? "nothing numeric to plot: see the table" : "waiting for rows…"));
      clear(this.figure, svg);
      this.renderLegend();
      return;
    }
    const whole = this.wholeValues();
    const top = 12, bottom = 46;
    const yTicks = ticks(b.y0, b.y1, Math.max(2, Math.floor((height - top - bottom) / 45)), whole);
    // the left margin fits the widest tick label and, apart from it, the axis title
    const widest = Math.max(...yTicks.map((v) => num(v, 3).length)) * 6.6;
    const m = { left: Math.ceil(widest + 30), right: 16, top, bottom };
    const pw = width - m.left - m.right, ph = height - m.top - m.bottom;
    const sx = (x) => m.left + (x - b.x0) / (b.x1 - b.x0) * pw;
    const sy = (y) => m.top + (1 - (y - b.y0) / (b.y1 - b.y0)) * ph;
    this.geometry = { m, pw, ph, b, sx, sy };
    const grid = s("g", { class: "grid" }), yAxis = s("g", { class: "axis y-axis" }), xAxis = s("g", { class: "axis x-axis" });
    for (const v of yTicks) {
      if (v < b.y0 - 1e-9 || v > b.y1 + 1e-9) continue;
      grid.append(s("line", { x1: m.left, x2: m.left + pw, y1: sy(v), y2: sy(v) }));
      yAxis.append(s("text", { x: m.left - 8, y: sy(v) + 4, "text-anchor": "end" }, num(v, 3)));
    }
    if (this.style !== "bar") {
      const xFormat = this.plan.vector ? (v) => num(v) : this.absoluteTime ? clockLabel : elapsedLabel;
      for (const v of ticks(b.x0, b.x1, Math.max(2, Math.floor(pw / (this.absoluteTime ? 110 : 80))))) {
        grid.append(s("line", { x1: sx(v), x2: sx(v), y1: m.top, y2: m.top + ph }));
        xAxis.append(s("text", { x: sx(v), y: m.top + ph + 16, "text-anchor": "middle" }, xFormat(v)));
      }
    }
    const titles = this.axisTitles();
    const axisTitles = s("g", { class: "axis-titles" },
      s("text", { class: "axis-title x", x: m.left + pw / 2, y: height - 6, "text-anchor": "middle" }, titles.x),
      s("text", { class: "axis-title y", x: 0, y: 0, "text-anchor": "middle",
                  transform: `translate(12 ${m.top + ph / 2}) rotate(-90)` }, titles.y));
    svg.append(grid, s("rect", { class: "frame", x: m.left, y: m.top, width: pw, height: ph }), yAxis, xAxis, axisTitles);
    const plot = s("g", { class: "series" });
    if (this.style === "bar") this.drawBars(plot, xAxis, sy, b, m, pw, ph);
    else {
      for (const series of this.series.values()) {
        if (series.hidden) continue;
        if (this.style === "scatter") {
          const dots = s("g", { fill: series.color, "data-series": series.name });
          for (let i = 0; i < series.xs.length; i++) {
            if (series.ys[i] !== null && (!this.zoom || (series.xs[i] >= b.x0 && series.xs[i] <= b.x1))) {
              dots.append(s("circle", { cx: sx(series.xs[i]).toFixed(1), cy: sy(series.ys[i]).toFixed(1), r: 2.2 }));
            }
          }
          plot.append(dots);
        } else {
          plot.append(s("path", { d: this.pathOf(series, sx, sy, pw), stroke: series.color, "stroke-dasharray": series.dash,
                                  "data-series": series.name, class: "line" }));
        }
      }
    }
    // lines outside a zoomed range are cut at the frame
    const clipId = "chart-clip";
    svg.append(s("clipPath", { id: clipId }, s("rect", { x: m.left, y: m.top, width: pw, height: ph })));
    plot.setAttribute("clip-path", `url(#${clipId})`);
    svg.append(plot);
    if (this.dragging) {
      const { from, to } = this.dragging;
      svg.append(s("rect", { class: "zoom-box", x: Math.min(from, to), y: m.top, width: Math.abs(to - from), height: ph }));
    }
    if (this.cursor !== null && this.style !== "bar") {
      const x = sx(this.cursor);
      svg.append(s("line", { class: "cursor", x1: x, x2: x, y1: m.top, y2: m.top + ph }));
    }
    clear(this.figure, svg);
    this.renderLegend();
  }

  /** An SVG path; more points than pixels are reduced to each pixel column's first, min, max, last. */
  pathOf(series, sx, sy, pw) {
    const { xs, ys } = series;
    const parts = [];
    let pen = false;
    const emit = (x, y) => { parts.push((pen ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1)); pen = true; };
    if (xs.length <= pw * 2) {
      for (let i = 0; i < xs.length; i++) {
        if (ys[i] === null) { pen = false; continue; }
        emit(sx(xs[i]), sy(ys[i]));
      }
      return parts.join("");
    }
    let column = null, bucket = [];
    const flush = () => {
      if (!bucket.length) return;
      let lo = bucket[0], hi = bucket[0];
      for (const p of bucket) { if (p[1] < lo[1]) lo = p; if (p[1] > hi[1]) hi = p; }
      const pts = [bucket[0], lo, hi, bucket[bucket.length - 1]].sort((a, b) => a[0] - b[0]);
      for (const p of pts) emit(p[0], p[1]);
      bucket = [];
    };
    for (let i = 0; i < xs.length; i++) {
      if (ys[i] === null) { flush(); pen = false; continue; }
      const x = sx(xs[i]), c = Math.floor(x);
      if (c !== column) { flush(); column = c; }
      bucket.push([x, sy(ys[i])]);
    }
    flush();
    return parts.join("");
  }

  /** One bar per series (a category: the key column's value), labelled under it. */
  drawBars(plot, xAxis, sy, b, m, pw, ph) {
    const shown = [...this.series.values()].filter((x) => !x.hidden && x.ys.length);
    const slot = pw / Math.max(1, shown.length);
    const zero = sy(Math.max(b.y0, Math.min(b.y1, 0)));
    const fits = Math.max(3, Math.floor(slot / 6.6));
    shown.forEach((series, i) => {
      const y = series.ys[series.ys.length - 1];
      if (y === null) return;
      const top = Math.min(zero, sy(y)), barHeight = Math.abs(sy(y) - zero);
      const center = m.left + i * slot + slot / 2;
      plot.append(s("rect", { class: "bar", x: m.left + i * slot + slot * 0.15, width: Math.max(1, slot * 0.7), y: top,
                              height: Math.max(1, barHeight), fill: series.color, "data-series": series.name },
                    s("title", {}, `${series.name}: ${num(y, 6)}`)));
      const text = series.name.length > fits ? series.name.slice(0, fits - 1) + "…" : series.name;
      xAxis.append(s("text", { x: center, y: m.top + ph + 16, "text-anchor": "middle" }, text,
                     text !== series.name ? s("title", {}, series.name) : null));
    });
  }

  /** The legend: rebuilt only when the series change (a live chart redraws several times a second,
   * and a button replaced between mouse down and up would lose the click), else updated in place. */
  renderLegend() {
    const all = [...this.series.values()].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
    const showValues = this.plan && !this.plan.vector;
    const signature = all.map((x) => x.name).join("\n") + "|" + this.hiddenCount + "|" + showValues;
    if (signature !== this.legendSignature) {
      this.legendSignature = signature;
      const items = [];
      if (all.length > 6) {
        const show = (on) => () => { for (const x of this.series.values()) x.hidden = !on; this.render(); };
        items.push(h("span", { class: "legend-all" }, h("button", { type: "button", class: "link", onclick: show(true) }, "all"), " · ",
                     h("button", { type: "button", class: "link", onclick: show(false) }, "none")));
      }
      for (const series of all) {
        series.valueEl = showValues ? h("span", { class: "legend-value" }) : null;
        series.legendEl = h("button", {
          type: "button", class: "legend-item", role: "listitem", "data-key": "series:" + series.name,
          onclick: () => { series.hidden = !series.hidden; this.render(); },
          ondblclick: () => { for (const x of this.series.values()) x.hidden = x !== series; this.render(); },
        }, h("span", { class: "swatch", style: { background: series.color } }), series.name, series.valueEl);
        items.push(series.legendEl);
      }
      if (this.hiddenCount) items.push(h("span", { class: "muted" }, `+ more series not drawn (at most ${MAX_SERIES})`));
      keepFocus(this.legend, () => clear(this.legend, items));
    }
    for (const series of all) {
      series.legendEl.classList.toggle("off", series.hidden);
      series.legendEl.setAttribute("aria-pressed", String(!series.hidden));
      series.legendEl.title = (series.hidden ? "show" : "hide") + " this series; double-click: only this one";
      if (series.valueEl) series.valueEl.textContent = num(series.ys.length ? series.ys[series.ys.length - 1] : null);
    }
  }

  hover(event) {
    const g = this.geometry;
    if (!g || this.style === "bar") return;
    const rect = this.figure.getBoundingClientRect();
    const px = event.clientX - rect.left;
    if (px < g.m.left || px > g.m.left + g.pw) { this.tooltip.hidden = true; return; }
    const x = g.b.x0 + (px - g.m.left) / g.pw * (g.b.x1 - g.b.x0);
    const lines = [];
    for (const series of this.series.values()) {
      if (series.hidden || !series.xs.length) continue;
      let best = 0, bestD = Infinity;
      for (let i = 0; i < series.xs.length; i++) {
        const d = Math.abs(series.xs[i] - x);
        if (d < bestD) { bestD = d; best = i; }
      }
      lines.push(h("div", {}, h("span", { class: "swatch", style: { background: series.color } }),
                   `${series.name}: `, h("b", {}, num(series.ys[best], 6))));
    }
    const label = this.plan.vector ? "index " + Math.round(x) : this.absoluteTime ? clockLabel(x) : elapsedLabel(x);
    clear(this.tooltip, h("div", { class: "muted" }, label), lines.slice(0, 12));
    this.tooltip.hidden = false;
    this.tooltip.style.left = Math.min(px + 14, rect.width - 220) + "px";
    this.tooltip.style.top = "8px";
    this.cursor = x;
    this.schedule();
  }
}
