// Charts for the device and statistics pages, drawn with uPlot (served by this server).
// Data comes from the JSON API with the page's session cookie; a null is a gap, drawn as one.
"use strict";

const UNITS = { demand: "kW", summation: "kWh delivered", price: "per kWh" };
// The pages state times in UTC: the axes draw them in UTC too (uPlot's default is the browser's zone).
const UTC = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");

// A value axis wide enough for its longest label (uPlot's fixed 50 px cut "4,776.5" to "776.5").
function valueAxis(extra) {
  return {
    ...extra,
    size(u, values, axisIdx, cycleNum) {
      const axis = u.axes[axisIdx];
      if (cycleNum > 1) return axis._size;  // settled: keep it, or the layout never converges
      u.ctx.font = axis.font[0];
      const widest = Math.max(0, ...(values || []).map((v) => u.ctx.measureText(v).width));
      return Math.ceil(widest / devicePixelRatio) + axis.ticks.size + axis.gap + 8;
    },
  };
}

function size(el) {
  return { width: Math.max(300, el.clientWidth - 2), height: el.classList.contains("small") ? 220 : 320 };
}

async function fetchJSON(url) {
  const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!resp.ok) throw new Error((await resp.json()).message || resp.statusText);
  return resp.json();
}

function note(el, text) {
  el.textContent = "";
  const p = document.createElement("p");
  p.className = "hint";
  p.textContent = text;
  el.appendChild(p);
}

async function drawReadings(el, start, end) {
  const kind = el.dataset.kind;
  const url = `/api/users/${el.dataset.cloudId}/readings?kind=${kind}&start=${start}&end=${end}`;
  let data;
  try {
    data = await fetchJSON(url);
  } catch (err) {
    note(el, `Could not load the readings: ${err.message}`);
    return;
  }
  el.dataset.points = String(data.count);
  if (!data.count) {
    note(el, kind === "demand" ? "No readings in this range." : `No ${kind} captured in this range.`);
    return;
  }
  el.textContent = "";
  const label = `${kind} (${UNITS[kind]})`;
  const series = data.resolution
    ? [{}, { label: `${label}, mean`, stroke: "#14532d", width: 1.5 },
       { label: "min", stroke: "#8fbc8f", width: 1 }, { label: "max", stroke: "#8fbc8f", width: 1 }]
    : [{}, { label, stroke: "#14532d", width: 1.2, spanGaps: false }];
  const columns = data.resolution ? [data.t, data.mean, data.min, data.max] : [data.t, data.value];
  const opts = {
    ...size(el), series, tzDate: UTC, cursor: { drag: { x: true, y: false } },
    // the whole asked range, up to now: a device silent for the last hour shows the silence
    scales: { x: { time: true, range: () => [start, end] } },
    axes: [{}, valueAxis({})],
  };
  el._plot = new uPlot(opts, columns, el);
}

function setupDevice() {
  const charts = [...document.querySelectorAll(".chart[data-kind]")];
  if (!charts.length) return;
  let span = 86400;
  let end = Date.now() / 1000;
  // one chart after another: a page view holds one of its token's slots for long requests
  const redraw = async () => {
    for (const el of charts) {
      el._plot?.destroy();
      await drawReadings(el, end - span, end);
    }
  };
  document.querySelectorAll(".ranges button").forEach((button) => {
    button.addEventListener("click", () => {
      if (button.dataset.range) {
        span = Number(button.dataset.range);
        end = Date.now() / 1000;
        document.querySelectorAll(".ranges button[data-range]").forEach((b) => b.classList.toggle("on", b === button));
      } else {
        end = Math.min(Date.now() / 1000, end + Number(button.dataset.shift) * span / 2);
      }
      redraw();
    });
  });
  redraw();
}

function bars(el, labels, values, label) {
  const xs = labels.map((_, i) => i);
  const opts = {
    ...size(el),
    scales: { x: { time: false, range: [-0.5, labels.length - 0.5] } },
    axes: [{ values: (u, splits) => splits.map((i) => labels[i] ?? "") }, {}],
    series: [{}, { label, fill: "#2e7d3288", stroke: "#14532d", paths: uPlot.paths.bars({ size: [0.8] }), points: { show: false } }],
  };
  el._plot = new uPlot(opts, [xs, values], el);
}

function setupStats() {
  const source = document.getElementById("stats-data");
  if (!source) return;
  const stats = JSON.parse(source.textContent);
  const spans = { completeness_today: "today", completeness_24h: "last 24 h", completeness_7d: "last 7 days" };
  document.querySelectorAll(".chart[data-key]").forEach((el) => {
    const figures = stats[el.dataset.key];
    bars(el, figures.buckets, figures.devices, `devices, ${spans[el.dataset.key]}`);
  });
  const fleet = document.getElementById("chart-demand-fleet");
  if (stats.fleet_demand_24h.t.length) {
    fleet._plot = new uPlot(
      { ...size(fleet), tzDate: UTC,
        series: [{}, { label: "fleet demand (kW)", stroke: "#14532d", width: 1.5 },
                 { label: "devices counted", stroke: "#8fbc8f", scale: "n" }],
        axes: [{}, valueAxis({}), valueAxis({ scale: "n", side: 1, grid: { show: false } })] },
      [stats.fleet_demand_24h.t, stats.fleet_demand_24h.kw, stats.fleet_demand_24h.devices], fleet);
  } else {
    note(fleet, "No figures yet: the pinger adds one each minute.");
  }
  const added = document.getElementById("chart-added");
  const days = stats.devices_added.day.map((d) => Date.parse(d + "T00:00:00Z") / 1000);
  if (days.length) {
    // from a day before the first registration to a day past today, however few points there are
    const first = days[0] - 86400;
    const last = Math.max(days[days.length - 1], Date.now() / 1000) + 86400;
    added._plot = new uPlot(
      { ...size(added), tzDate: UTC, scales: { x: { time: true, range: () => [first, last] } },
        axes: [{}, valueAxis({})],
        series: [{}, { label: "devices registered", stroke: "#14532d", width: 2, points: { size: 6 } }] },
      [days, stats.devices_added.total], added);
  }
}

window.addEventListener("DOMContentLoaded", () => { setupDevice(); setupStats(); });
