// cryowarp web UI: overview with filters, item view, settings. Plain JS + Plotly (served locally).
"use strict";

const state = {
  project: null,      // /api/project
  items: null,        // /api/items (columnar)
  filters: null,      // /api/filters
  metrics: [],        // metric descriptions from /api/items
  view: "overview",
  current: null,      // name of the item shown
  item: null,         // /api/items/{name}
  plotted: new Set(), // metric keys whose plots exist
  deconvTimer: null,
};
const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "toImage"] };
const COLORS = { pass: "#2e6fd0", fail: "#e3a21a", excluded: "#8a8a8a", included: "#2e9d4b" };

// ---------------------------------------------------------------- helpers
async function api(path, opts = {}) {
  const init = { headers: { "Content-Type": "application/json" }, ...opts };
  if (init.body && typeof init.body !== "string") init.body = JSON.stringify(init.body);
  const r = await fetch(path, init);
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = { detail: text }; }
  if (!r.ok) {
    const msg = (data && data.detail) ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : r.statusText;
    throw new Error(`${r.status}: ${msg}`);
  }
  return data;
}
const $ = (id) => document.getElementById(id);
const fmt = (v, d = 2) => (v === null || v === undefined || Number.isNaN(v)) ? "–" : Number(v).toFixed(d);
const enc = encodeURIComponent;

// ---------------------------------------------------------------- header + nav bar
function renderCounts() {
  const p = state.project;
  if (!p) return;
  $("project-name").textContent = p.name;
  $("count-items").textContent = p.n_items;
  $("count-selected").textContent = p.n_selected;
  $("count-particles").textContent = p.n_particles;
  $("count-queued").textContent = (p.counts.queued || 0) + (p.counts.processing || 0);
  $("count-failed").textContent = p.counts.failed || 0;
  const s = p.star && p.star.particles;
  const w = p.star_writer || {};
  let text = s ? `particles.star: ${s.n_rows} rows` : "particles.star: none (no particles selected)";
  if (w.writing || w.pending) text = "particles.star: updating…";
  else if (w.last && w.last.error) text = `STAR files not written: ${w.last.error}`;
  $("star-info").textContent = text;
  $("star-state").textContent = (w.writing || w.pending) ? "STAR ⟳" : "STAR ✓";
}

function renderNavbar() {
  const bar = $("navbar");
  const it = state.items;
  if (!it) return;
  // reuse cells when the count is unchanged (live updates), otherwise rebuild
  if (bar.children.length !== it.names.length) {
    bar.textContent = "";
    const frag = document.createDocumentFragment();
    it.names.forEach((name, i) => {
      const c = document.createElement("div");
      c.className = "cell";
      c.dataset.index = i;
      frag.appendChild(c);
    });
    bar.appendChild(frag);
  }
  it.names.forEach((name, i) => {
    const c = bar.children[i];
    const st = it.status[i];
    c.className = `cell st-${st}` + (name === state.current && state.view === "item" ? " current" : "");
    c.dataset.name = name;
    c.title = `${name}: ${st.replace("_", " ")}` + (it.error[i] ? ` — ${it.error[i]}` : "");
  });
}
$("navbar").addEventListener("click", (ev) => {
  const name = ev.target.dataset && ev.target.dataset.name;
  if (name) location.hash = `#/item/${enc(name)}`;
});
$("navbar").addEventListener("mouseover", (ev) => {
  if (ev.target.dataset && ev.target.dataset.name) $("nav-hover").textContent = ev.target.title;
});

function stepItem(delta) {
  const names = state.items ? state.items.names : [];
  if (!names.length) return;
  let i = names.indexOf(state.current);
  i = i < 0 ? 0 : Math.min(names.length - 1, Math.max(0, i + delta));
  location.hash = `#/item/${enc(names[i])}`;
}
document.addEventListener("keydown", (ev) => {
  const t = ev.target;
  if (t.tagName === "SELECT" || t.tagName === "TEXTAREA") return;
  if (t.tagName === "INPUT" && !["checkbox", "button", "radio"].includes(t.type)) return; // typing, sliders
  if (ev.key === "ArrowRight" || ev.key === "ArrowDown") { stepItem(+1); ev.preventDefault(); }
  if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") { stepItem(-1); ev.preventDefault(); }
});

// ---------------------------------------------------------------- data loading
async function loadProject() { state.project = await api("/api/project"); renderCounts(); }
async function loadItems() {
  state.items = await api("/api/items");
  state.metrics = state.items.metric_info;
  renderNavbar();
}
async function loadFilters() { state.filters = await api("/api/filters"); }
async function refreshAll() {
  await Promise.all([loadProject(), loadItems(), loadFilters()]);
  if (state.view === "overview") renderOverview();
}

// ---------------------------------------------------------------- overview
function filterRange(m) {
  const f = state.filters ? state.filters.ranges[m.key] : null;
  return f || { min: null, max: null };
}

function metricCard(m) {
  const card = document.createElement("div");
  card.className = "card";
  card.id = `card-${m.key}`;
  card.dataset.key = m.key;
  const unit = m.unit ? ` (${m.unit})` : "";
  const minIn = m.min_filter ? `<label>min <input type="number" step="any" id="fmin-${m.key}" data-side="min"></label>` : "";
  const maxIn = m.max_filter ? `<label>max <input type="number" step="any" id="fmax-${m.key}" data-side="max"></label>` : "";
  card.innerHTML = `<h3>${m.label}${unit}<span class="range">${minIn} ${maxIn}
      <span id="fcount-${m.key}"></span></span></h3><div class="plot" id="plot-${m.key}"></div>`;
  card.querySelectorAll("input[type=number]").forEach((inp) => {
    inp.addEventListener("change", () => {
      const v = inp.value === "" ? null : Number(inp.value);
      setFilter(m.key, inp.dataset.side, v);
    });
  });
  return card;
}

function limitShapes(m) {
  // dashed lines at the filter limits: horizontal on the scatter (left), vertical on the histogram (right)
  const r = filterRange(m);
  const shapes = [], meta = [];
  for (const side of ["min", "max"]) {
    if (r[side] === null || r[side] === undefined) continue;
    const line = { color: "#d62728", width: 2, dash: "dash" };
    shapes.push({ type: "line", line, xref: "x domain", x0: 0, x1: 1, yref: "y", y0: r[side], y1: r[side] });
    meta.push({ side, coord: "y0" });
    shapes.push({ type: "line", line, yref: "y2 domain", y0: 0, y1: 1, xref: "x2", x0: r[side], x1: r[side] });
    meta.push({ side, coord: "x0" });
  }
  return { shapes, meta };
}

function overviewTraces(m) {
  const it = state.items;
  const ys = it.metrics[m.key];
  const groups = { pass: { x: [], y: [], text: [] }, fail: { x: [], y: [], text: [] }, excluded: { x: [], y: [], text: [] } };
  const histVals = [];
  for (let i = 0; i < it.names.length; i++) {
    const v = ys[i];
    if (v === null || v === undefined) continue;
    histVals.push(v);
    const st = it.status[i];  // a manual include counts as passing, a manual exclude as excluded
    const g = st === "excluded" ? "excluded" : (st === "filtered_out" ? "fail" : "pass");
    groups[g].x.push(i); groups[g].y.push(v); groups[g].text.push(it.names[i]);
  }
  const traces = Object.entries(groups).map(([g, d]) => ({
    type: "scatter", mode: "markers", name: g, x: d.x, y: d.y, text: d.text, xaxis: "x", yaxis: "y", selectedpoints: null,
    hovertemplate: "%{text}<br>%{y}<extra></extra>",
    marker: { size: 5, color: COLORS[g], symbol: g === "excluded" ? "x" : "circle" },
  }));
  traces.push({ type: "histogram", x: histVals, xaxis: "x2", yaxis: "y2", marker: { color: "#6a8fc7" }, selectedpoints: null,
    nbinsx: 40, hovertemplate: "%{x}: %{y}<extra></extra>", name: "histogram" });
  return traces;
}

const drawn = {};          // metric key -> items revision drawn
const visibleCards = new Set();
const cardObserver = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const key = e.target.dataset.key;
    if (e.isIntersecting) { visibleCards.add(key); drawMetric(key); } else visibleCards.delete(key);
  }
}, { rootMargin: "200px" });

function drawMetric(key) {
  // plots are drawn when (nearly) on screen, so a long overview becomes interactive quickly
  const m = state.metrics.find((x) => x.key === key);
  if (!m || !state.items || state.view !== "overview") return;
  const version = `${state.items.revision}:${JSON.stringify(filterRange(m))}`;
  if (drawn[key] === version) return;
  const div = $(`plot-${key}`);
  const { shapes, meta } = limitShapes(m);
  div._limitMeta = meta;
  Plotly.react(div, overviewTraces(m), {
    margin: { l: 44, r: 6, t: 4, b: 30 }, showlegend: false, hovermode: "closest", dragmode: "select",
    xaxis: { domain: [0, 0.58], title: { text: "acquisition order", standoff: 2 } },
    yaxis: { anchor: "x" },
    xaxis2: { domain: [0.66, 1], anchor: "y2" }, yaxis2: { anchor: "x2" },
    shapes, selections: [], bargap: 0.05, uirevision: key,
  }, { ...PLOT_CONFIG, edits: { shapePosition: true } });
  if (drawn[key] === undefined) bindLimitDrags(m, div);
  drawn[key] = version;
}

function renderOverview() {
  const cards = $("metric-cards");
  if (!state.items) return;
  for (const m of state.metrics) {
    if (!state.plotted.has(m.key)) {
      const card = metricCard(m);
      cards.appendChild(card);
      state.plotted.add(m.key);
      cardObserver.observe(card);
    }
    const r = filterRange(m);
    const minIn = $(`fmin-${m.key}`), maxIn = $(`fmax-${m.key}`);
    if (minIn && document.activeElement !== minIn) minIn.value = r.min ?? "";
    if (maxIn && document.activeElement !== maxIn) maxIn.value = r.max ?? "";
    const failing = state.filters && state.filters.n_failing ? state.filters.n_failing[m.key] : null;
    $(`fcount-${m.key}`).textContent = failing !== null && failing !== undefined ? `${failing} outside` : "";
  }
  // which cards are (nearly) on screen: all positions read in one layout pass, before any drawing
  if (!$("view-overview").hidden) {
    for (const m of state.metrics) {
      const bb = $(`card-${m.key}`).getBoundingClientRect();
      if (bb.bottom > -200 && bb.top < window.innerHeight + 200) visibleCards.add(m.key);
    }
  }
  for (const m of state.metrics) if (visibleCards.has(m.key)) drawMetric(m.key);
  scheduleOffscreenDraws();
}

function scheduleOffscreenDraws() {
  // after the first screen is up, draw the other plots one per idle period
  const idle = window.requestIdleCallback || ((f) => setTimeout(f, 50));
  idle(() => {
    if (state.view !== "overview") return;
    const next = state.metrics.find((m) => drawn[m.key] !== `${state.items.revision}:${JSON.stringify(filterRange(m))}`);
    if (!next) { if (!document.body.dataset.allDrawnMs) document.body.dataset.allDrawnMs = String(Math.round(performance.now())); return; }
    drawMetric(next.key);
    scheduleOffscreenDraws();
  });
}

function bindLimitDrags(m, div) {
  div.on("plotly_relayout", (ev) => {
    // a dragged limit line reports e.g. {"shapes[0].y0": 1.2, "shapes[0].y1": 1.2}
    for (const k of Object.keys(ev)) {
      const mt = k.match(/^shapes\[(\d+)\]\.(x0|y0)$/);
      if (!mt) continue;
      const meta = (div._limitMeta || [])[Number(mt[1])];
      if (meta && meta.coord === mt[2]) { setFilter(m.key, meta.side, roundFor(m, Number(ev[k]))); return; }
    }
  });
  div.on("plotly_click", (ev) => {
    // a click on a point opens that item
    const pt = ev && ev.points && ev.points[0];
    if (pt && pt.data.type === "scatter" && pt.text) location.hash = `#/item/${enc(pt.text)}`;
  });
  div.on("plotly_selected", (ev) => {
    // box-select an interval: along x on the histogram, along y on the scatter
    if (!ev || !ev.range) return;
    const span = ev.range.x2 || ev.range.y;
    if (!span) return;
    const lo = roundFor(m, Math.min(...span)), hi = roundFor(m, Math.max(...span));
    const patch = {};
    if (m.min_filter) patch.min = lo;
    if (m.max_filter) patch.max = hi;
    // the range now shows as the dashed limits: drop the selection box and the dimming
    Plotly.relayout(div, { selections: [] });
    Plotly.restyle(div, { selectedpoints: [null] });
    setFilterRange(m.key, patch);
  });
}

function roundFor(m, v) {
  // limits set with the mouse get the precision the metric is shown with (plus one digit)
  const d = Math.max(1, (m.digits ?? 2) + 1);
  return Number(v.toFixed(d));
}

async function setFilter(key, side, value) { return setFilterRange(key, { [side]: value }); }

async function setFilterRange(key, patch) {
  const t0 = performance.now();
  try {
    const res = await api("/api/filters", { method: "PUT", body: { ranges: { [key]: patch } } });
    state.filters = res.filters;
    state.project = res.project;
    await loadItems();
    renderCounts();
    renderOverview();
    document.body.dataset.lastFilterMs = String(Math.round(performance.now() - t0));
  } catch (e) {
    alert(`Filter not applied: ${e.message}`);
    await loadFilters();
    renderOverview();
  }
}

// ---------------------------------------------------------------- item view
async function showItem(name) {
  state.current = name;
  renderNavbar();
  let item;
  try {
    item = await api(`/api/items/${enc(name)}`);
  } catch (e) {
    $("item-name").textContent = name;
    $("item-error").textContent = e.message;
    return;
  }
  if (state.current !== name) return; // user moved on
  state.item = item;
  $("item-name").textContent = item.name;
  const b = $("item-status");
  b.textContent = item.status.replace("_", " ");
  b.className = `badge st-${item.status}`;
  $("item-error").textContent = item.error || "";
  const m = item.metrics || {};
  const parts = [];
  for (const info of state.metrics) {
    if (m[info.key] !== null && m[info.key] !== undefined) parts.push(`${info.label} ${fmt(m[info.key], info.digits ?? 2)} ${info.unit || ""}`);
  }
  if (item.ctf && item.ctf.astigmatism_angle_deg !== undefined) parts.push(`astig. angle ${fmt(item.ctf.astigmatism_angle_deg, 1)}°`);
  $("item-summary").textContent = parts.join(" · ");
  $("ps2d").src = item.images.ps2d ? `${item.images.ps2d}?v=${item.version}` : "";
  renderPS1D(item);
  renderAverage(item);
}

function renderPS1D(item) {
  const s = item.ps1d;
  if (!s) { Plotly.purge("ps1d"); $("ps1d").textContent = "no spectrum yet"; return; }
  $("ps1d").textContent = "";
  const traces = [{ x: s.freq_per_a, y: s.ps, name: "spectrum − background", mode: "lines", line: { color: "#444" } }];
  if (s.fit) traces.push({ x: s.freq_per_a, y: s.fit, name: "CTF fit", mode: "lines", line: { color: "#d62728" } });
  if (s.background) traces.push({ x: s.freq_per_a, y: s.background, name: "background", mode: "lines",
    line: { color: "#2e6fd0", dash: "dot" } });
  const shapes = [];
  if (item.metrics && item.metrics.resolution_a) {
    const f = 1 / item.metrics.resolution_a;
    shapes.push({ type: "line", xref: "x", x0: f, x1: f, yref: "paper", y0: 0, y1: 1,
      line: { color: "#2e9d4b", width: 2, dash: "dash" } });
  }
  // show the fitted band (the lowest frequencies dwarf everything else), with a little margin
  const f = s.freq_per_a, fmax = f[f.length - 1];
  let xrange = [0, fmax];
  if (s.fit_range_a && s.fit_range_a[0] > 0 && s.fit_range_a[1] > 0) {
    xrange = [0.7 / s.fit_range_a[0], Math.min(fmax, 1.15 / s.fit_range_a[1])];
  }
  let lo = Infinity, hi = -Infinity;
  for (const t of traces) {
    t.x.forEach((x, i) => {
      const y = t.y[i];
      if (x >= xrange[0] && x <= xrange[1] && y !== null && Number.isFinite(y)) { lo = Math.min(lo, y); hi = Math.max(hi, y); }
    });
  }
  const yrange = Number.isFinite(lo) && hi > lo ? [lo - 0.05 * (hi - lo), hi + 0.08 * (hi - lo)] : undefined;
  Plotly.react("ps1d", traces, {
    margin: { l: 50, r: 8, t: 6, b: 36 }, shapes, legend: { orientation: "h", y: 1.1 },
    xaxis: { title: { text: "spatial frequency (1/Å)" }, range: xrange }, yaxis: { range: yrange },
    annotations: shapes.length ? [{ x: shapes[0].x0, y: 1, yref: "paper", text: `${fmt(item.metrics.resolution_a, 1)} Å`,
      showarrow: false, xanchor: "left", font: { color: "#2e9d4b" } }] : [],
  }, PLOT_CONFIG);
}

function averageImageUrl(item) {
  if (!item.images.average) return null;
  if ($("deconv").checked) {
    return `${item.images.average}?deconv=1&strength=${$("deconv-strength").value}&falloff=${$("deconv-falloff").value}&v=${item.version}`;
  }
  return `${item.images.average}?v=${item.version}`;
}

function averageTraces(item) {
  const W = item.shape_yx[1], H = item.shape_yx[0];
  const traces = [];
  // a transparent frame so the axes exist even without picks
  traces.push({ x: [0, W], y: [0, H], mode: "markers", marker: { opacity: 0 }, hoverinfo: "skip", showlegend: false,
    name: "frame" });
  if ($("show-defocus").checked && item.local_defocus) {
    const d = item.local_defocus;
    traces.push({ type: "heatmap", x: d.x_px, y: d.y_px, z: d.defocus_um, opacity: 0.45, colorscale: "Viridis",
      name: "local defocus", zsmooth: "best", colorbar: { title: { text: "µm" }, len: 0.6 },
      hovertemplate: "defocus %{z:.3f} µm<extra></extra>" });
  }
  if ($("show-tracks").checked && item.motion_tracks) {
    const t = item.motion_tracks;
    const xs = [], ys = [];
    for (const tr of t.tracks) {
      for (let f = 0; f < tr.dx_px.length; f++) {
        xs.push(tr.x_px + t.exaggeration * tr.dx_px[f]);
        ys.push(tr.y_px + t.exaggeration * tr.dy_px[f]);
      }
      xs.push(null); ys.push(null);
    }
    traces.push({ x: xs, y: ys, mode: "lines", name: `motion ×${t.exaggeration}`, line: { color: "#ff7f0e", width: 2 },
      hoverinfo: "skip" });
    traces.push({ x: t.tracks.map((tr) => tr.x_px), y: t.tracks.map((tr) => tr.y_px), mode: "markers",
      name: "track start", marker: { color: "#ff7f0e", size: 4 }, hoverinfo: "skip" });
  }
  if ($("show-particles").checked) {
    const p = item.picks;
    const r = item.particle_radius_px;
    const kinds = [["boxnet", "#00e5ff"], ["user", "#7CFC00"]];
    for (const [kind, color] of kinds) {
      const sel = p.filter((q) => q.source === kind);
      traces.push({ x: sel.map((q) => q.x), y: sel.map((q) => q.y), mode: "markers", name: `${kind} picks`,
        marker: { symbol: "circle-open", size: Math.max(6, Math.min(40, 2 * r * item.display_scale)), color,
          line: { width: 2 } },
        text: sel.map((q) => q.score === null ? kind : `score ${fmt(q.score, 2)}`),
        hovertemplate: "(%{x:.0f}, %{y:.0f}) %{text}<extra></extra>" });
    }
  }
  return traces;
}

function renderAverage(item) {
  const div = $("average");
  const W = item.shape_yx[1], H = item.shape_yx[0];
  const src = averageImageUrl(item);
  const layout = {
    margin: { l: 40, r: 10, t: 6, b: 30 }, dragmode: "pan", showlegend: true, legend: { orientation: "h", y: 1.04 },
    xaxis: { range: [0, W], showgrid: false, zeroline: false, constrain: "domain" },
    yaxis: { range: [H, 0], showgrid: false, zeroline: false, scaleanchor: "x", constrain: "domain" },
    images: src ? [{ source: src, xref: "x", yref: "y", x: 0, y: 0, sizex: W, sizey: H, sizing: "stretch",
      layer: "below", xanchor: "left", yanchor: "top" }] : [],
    uirevision: item.name,
  };
  if ($("show-mask").checked && item.images.mask) {
    // the mask is on BoxNet's 8 Å grid; stretched over the micrograph like the average
    layout.images.push({ source: `${item.images.mask}?v=${item.version}`, xref: "x", yref: "y", x: 0, y: 0,
      sizex: W, sizey: H, sizing: "stretch", layer: "above", xanchor: "left", yanchor: "top", name: "mask" });
  }
  if ($("edit-mask").checked) layout.dragmode = false; // drags paint instead of panning
  Plotly.react(div, averageTraces(item), layout, { ...PLOT_CONFIG, scrollZoom: true });
  $("pick-count").textContent = `${item.picks.length} picks (${item.n_user_added} added, ${item.n_user_removed} removed by you)`;
  $("mask-info").textContent = item.images.mask
    ? `${item.n_mask_strokes} mask stroke${item.n_mask_strokes === 1 ? "" : "s"} by you`
    : "no BoxNet mask for this item";
  ["show-mask", "edit-mask", "mask-reset"].forEach((id) => { $(id).disabled = !item.images.mask; });
  if (!div.dataset.bound) { bindPickEditing(div); bindMaskPainting(div); div.dataset.bound = "1"; }
}

function plotCoords(div, clientX, clientY) {
  // (x, y) in micrograph pixels under the mouse, or null outside the axes
  const fl = div._fullLayout;
  if (!fl || !fl.xaxis) return null;
  const bb = div.getBoundingClientRect();
  return [fl.xaxis.p2d(clientX - bb.left - fl.xaxis._offset), fl.yaxis.p2d(clientY - bb.top - fl.yaxis._offset)];
}

function brushScreenRadius(div, radiusMicrographPx) {
  // the brush radius in screen pixels at the current zoom
  const xa = div._fullLayout && div._fullLayout.xaxis;
  return xa ? Math.abs(xa.d2p(radiusMicrographPx) - xa.d2p(0)) : 0;
}

function bindMaskPainting(div) {
  // edit-mask mode: a drag is one brush stroke, sent when the mouse is released; the shift key erases.
  // A fixed SVG layer shows the brush under the mouse and the stroke while it is drawn.
  const layer = $("brush-layer"), cursor = $("brush-cursor"), path = $("brush-path");
  let stroke = null;
  const radiusPx = () => Number($("mask-brush").value) / ((state.item && state.item.pixel_size_a) || 1);
  const showCursor = (ev, erase) => {
    const inside = $("edit-mask").checked && state.item && plotCoords(div, ev.clientX, ev.clientY)
      && div.contains(document.elementFromPoint(ev.clientX, ev.clientY));
    layer.style.display = inside || stroke ? "block" : "none";
    cursor.setAttribute("cx", ev.clientX);
    cursor.setAttribute("cy", ev.clientY);
    cursor.setAttribute("r", brushScreenRadius(div, radiusPx()));
    cursor.setAttribute("stroke", erase ? "#1f6fd0" : "#d62728");
  };
  div.addEventListener("mousedown", (ev) => {
    if (!$("edit-mask").checked || !state.item || ev.button !== 0) return;
    const p = plotCoords(div, ev.clientX, ev.clientY);
    if (!p) return;
    stroke = { erase: ev.shiftKey, points: [p], screen: [[ev.clientX, ev.clientY]] };
    path.setAttribute("stroke", stroke.erase ? "rgba(31,111,208,0.45)" : "rgba(214,39,40,0.45)");
    path.setAttribute("stroke-width", 2 * brushScreenRadius(div, radiusPx()));
    path.setAttribute("points", `${ev.clientX},${ev.clientY} ${ev.clientX + 0.01},${ev.clientY}`);
    ev.preventDefault();
    ev.stopPropagation();
  }, true);
  document.addEventListener("mousemove", (ev) => {
    showCursor(ev, stroke ? stroke.erase : ev.shiftKey);
    if (!stroke) return;
    const p = plotCoords(div, ev.clientX, ev.clientY);
    const last = stroke.points[stroke.points.length - 1];
    if (p && Math.hypot(p[0] - last[0], p[1] - last[1]) >= 2) {
      stroke.points.push(p);
      stroke.screen.push([ev.clientX, ev.clientY]);
      path.setAttribute("points", stroke.screen.map((q) => q.join(",")).join(" "));
    }
  }, true);
  document.addEventListener("mouseup", async () => {
    const s = stroke;
    stroke = null;
    if (!s || !state.item) return;
    try {
      const res = await api(`/api/items/${enc(state.item.name)}/mask`, { method: "POST",
        body: { action: s.erase ? "erase" : "paint", radius_px: radiusPx(), points: s.points } });
      state.item.n_mask_strokes = res.n_mask_strokes;
      state.item.version = res.version;
      renderAverage(state.item);
    } catch (e) { alert(`Mask stroke not saved: ${e.message}`); }
    finally { path.setAttribute("points", ""); }
  }, true);
}

function bindPickEditing(div) {
  // Plotly covers the page while a drag (pan) is in progress, so the plot never sees a "click":
  // a press inside the plot followed by a release within 4 px counts as a click.
  let down = null;
  div.addEventListener("mousedown", (ev) => {
    down = ev.button === 0 ? [ev.clientX, ev.clientY] : null;
  }, true);
  document.addEventListener("mouseup", (ev) => {
    const start = down;
    down = null;
    if (!start || !$("edit-picks").checked || !state.item) return;
    if (Math.hypot(ev.clientX - start[0], ev.clientY - start[1]) > 4) return; // a pan, not a click
    onPlotClick(div, ev.clientX, ev.clientY);
  }, true);
}

async function onPlotClick(div, clientX, clientY) {
  const p = plotCoords(div, clientX, clientY);
  if (!p) return;
  const [x, y] = p;
  const W = state.item.shape_yx[1], H = state.item.shape_yx[0];
  if (!(x >= 0 && y >= 0 && x < W && y < H)) return;
  const r = state.item.particle_radius_px;
  let nearest = null, best = Infinity;
  for (const q of state.item.picks) {
    const d = Math.hypot(q.x - x, q.y - y);
    if (d < best) { best = d; nearest = q; }
  }
  const body = (nearest && best <= r) ? { action: "remove", x: nearest.x, y: nearest.y } : { action: "add", x, y };
  try {
    const res = await api(`/api/items/${enc(state.item.name)}/picks`, { method: "POST", body });
    Object.assign(state.item, res);
    renderAverage(state.item);
  } catch (e) { alert(`Pick not saved: ${e.message}`); }
}

["show-particles", "show-tracks", "show-defocus", "deconv", "show-mask"].forEach((id) =>
  $(id).addEventListener("change", () => state.item && renderAverage(state.item)));
// the two edit modes exclude each other; painting shows the mask
$("edit-picks").addEventListener("change", () => {
  if ($("edit-picks").checked && $("edit-mask").checked) { $("edit-mask").checked = false; state.item && renderAverage(state.item); }
});
$("edit-mask").addEventListener("change", () => {
  if ($("edit-mask").checked) { $("edit-picks").checked = false; $("show-mask").checked = true; }
  if (state.item) renderAverage(state.item);
});
$("mask-brush").addEventListener("input", () => { $("mask-brush-val").textContent = $("mask-brush").value; });
$("mask-reset").addEventListener("click", async () => {
  if (!state.item) return;
  try {
    const res = await api(`/api/items/${enc(state.item.name)}/mask`, { method: "DELETE" });
    state.item.n_mask_strokes = res.n_mask_strokes;
    state.item.version = res.version;
    renderAverage(state.item);
  } catch (e) { alert(`Mask not reset: ${e.message}`); }
});
["deconv-strength", "deconv-falloff"].forEach((id) => $(id).addEventListener("input", () => {
  $(`${id}-val`).textContent = Number($(id).value).toFixed(2);
  if (!$("deconv").checked || !state.item) return;
  clearTimeout(state.deconvTimer);
  state.deconvTimer = setTimeout(() => renderAverage(state.item), 150);
}));

async function setManual(value) {
  if (!state.current) return;
  const res = await api(`/api/items/${enc(state.current)}/selection`, { method: "PUT", body: { included: value } });
  state.project = res.project;
  renderCounts();
  await loadItems();
  await showItem(state.current);
}
$("item-include").addEventListener("click", () => setManual(true));
$("item-exclude").addEventListener("click", () => setManual(false));
$("item-auto").addEventListener("click", () => setManual(null));
$("item-prev").addEventListener("click", () => stepItem(-1));
$("item-next").addEventListener("click", () => stepItem(+1));

// ---------------------------------------------------------------- retraining
function renderRetrain(st) {
  if (!st) return;
  const avail = st.available !== false;
  $("retrain-start").disabled = !avail || st.status === "running";
  let msg = st.status;
  if (st.message) msg += ` — ${st.message}`;
  if (st.n_iterations) msg += ` (iteration ${st.iteration}/${st.n_iterations})`;
  const reps0 = st.reports || [];
  if (reps0.length && reps0.every((r) => r.accuracy_old_model_old_data === null)) msg += " · old-data figures need a general corpus";
  $("retrain-status").textContent = msg;
  $("retrain-use").hidden = !(st.status === "done" && st.model_path);
  state.retrainModel = st.model_path;
  const reps = st.reports || [];
  const keys = [
    ["accuracy_old_model_new_data", "old model, new data", "#999", "dot"],
    ["accuracy_old_model_old_data", "old model, old data", "#555", "dot"],
    ["accuracy_new_model_new_data", "new model, new data", "#d62728", "solid"],
    ["accuracy_new_model_old_data", "new model, old data", "#2e6fd0", "solid"],
  ];
  const traces = keys.map(([k, name, color, dash]) => ({
    x: reps.map((r) => r.epoch), y: reps.map((r) => r[k]), name, mode: "lines+markers", line: { color, dash },
  }));
  Plotly.react("retrain-plot", traces, {
    margin: { l: 44, r: 8, t: 6, b: 30 }, xaxis: { title: { text: "epoch" }, dtick: 1 },
    yaxis: { title: { text: "balanced pixel accuracy" }, range: [0, 1] }, legend: { orientation: "h", y: 1.15 },
  }, PLOT_CONFIG);
}
async function loadRetrain() { renderRetrain(await api("/api/boxnet/retrain")); }
$("retrain-start").addEventListener("click", async () => {
  const epochs = Math.max(1, Math.round(Number($("retrain-epochs").value) || 20));
  try { renderRetrain(await api("/api/boxnet/retrain", { method: "POST", body: { epochs } })); }
  catch (e) { $("retrain-status").textContent = e.message; }
});

$("retrain-use").addEventListener("click", async () => {
  try {
    // blob_weight null = the model's own: a retrained model carries none, so it picks without the
    // generic dark-blob prior, which works against it (docs/benchmarks/picking_retrain.md)
    const changes = { boxnet_model_path: state.retrainModel, pick: { blob_weight: null } };
    const res = await api("/api/settings", { method: "PUT", body: { changes } });
    $("retrain-status").textContent = `now picking with ${state.retrainModel} (blob prior off); ${res.n_requeued} items requeued`;
    state.project = res.project; renderCounts(); await loadItems();
  } catch (e) { $("retrain-status").textContent = `not changed: ${e.message}`; }
});

// ---------------------------------------------------------------- settings
let settingsSchema = null, settingsValues = null;
function flatten(obj, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
    else out[key] = v;
  }
  return out;
}
async function loadSettings() {
  const res = await api("/api/settings");
  settingsSchema = res.fields; settingsValues = res.values;
  const form = $("settings-form");
  form.textContent = "";
  const groups = {};
  for (const f of res.fields) {
    const g = f.path.includes(".") ? f.path.split(".")[0] : "general";
    (groups[g] = groups[g] || []).push(f);
  }
  for (const [g, fields] of Object.entries(groups)) {
    const fs = document.createElement("fieldset");
    const legend = document.createElement("legend");
    legend.textContent = g;
    fs.appendChild(legend);
    for (const f of fields) {
      const row = document.createElement("div");
      row.className = "row";
      const id = `set-${f.path.replace(/\./g, "-")}`;
      let input;
      if (f.enum) {
        input = document.createElement("select");
        for (const o of f.enum) {
          const opt = document.createElement("option");
          opt.textContent = String(o); opt.value = String(o); opt.selected = o === f.value;
          input.appendChild(opt);
        }
      } else {
        input = document.createElement("input");
        if (f.type === "boolean") { input.type = "checkbox"; input.checked = !!f.value; }
        else if (f.type === "number" || f.type === "integer") { input.type = "number"; input.step = "any"; input.value = f.value ?? ""; }
        else { input.type = "text"; input.value = f.value === null || f.value === undefined ? "" : (typeof f.value === "object" ? JSON.stringify(f.value) : String(f.value)); }
      }
      input.id = id;
      const label = document.createElement("label");
      label.htmlFor = id; label.textContent = f.path.split(".").slice(-1)[0];
      const desc = document.createElement("span");
      desc.className = "desc"; desc.textContent = f.description || "";
      row.append(label, input, desc);
      row.dataset.path = f.path;
      row.dataset.type = f.type;
      input.addEventListener("change", () => row.classList.add("changed"));
      fs.appendChild(row);
    }
    form.appendChild(fs);
  }
}
function readSettingsForm() {
  const changes = {};
  document.querySelectorAll("#settings-form .row.changed").forEach((row) => {
    const el = row.querySelector("input,select");
    let v;
    if (el.type === "checkbox") v = el.checked;
    else if (row.dataset.type === "number" || row.dataset.type === "integer") v = el.value === "" ? null : Number(el.value);
    else if (row.dataset.type === "array" || row.dataset.type === "object") { try { v = JSON.parse(el.value); } catch (e) { v = el.value; } }
    else v = el.value === "" ? null : el.value;
    changes[row.dataset.path] = v;
  });
  return changes;
}
$("settings-save").addEventListener("click", async () => {
  const changes = readSettingsForm();
  if (!Object.keys(changes).length) { $("settings-msg").textContent = "nothing changed"; return; }
  try {
    const res = await api("/api/settings", { method: "PUT", body: { changes } });
    $("settings-msg").textContent = `saved; ${res.n_requeued} items requeued`;
    state.project = res.project; renderCounts();
    await loadItems();
    await loadSettings();
  } catch (e) { $("settings-msg").textContent = `not saved: ${e.message}`; }
});

// ---------------------------------------------------------------- routing + live updates
function route() {
  const h = location.hash || "#/overview";
  let view = "overview";
  if (h.startsWith("#/item/")) view = "item";
  else if (h.startsWith("#/settings")) view = "settings";
  state.view = view;
  for (const v of ["overview", "item", "settings"]) $(`view-${v}`).hidden = v !== view;
  $("nav-overview").classList.toggle("active", view === "overview");
  $("nav-settings").classList.toggle("active", view === "settings");
  if (view === "item") {
    const name = decodeURIComponent(h.slice("#/item/".length));
    showItem(name);
    loadRetrain().catch(() => {});
  } else if (view === "settings") {
    state.current = null; renderNavbar(); loadSettings();
  } else {
    state.current = null; renderNavbar(); renderOverview();
    // plots drawn while hidden have zero width
    for (const m of state.metrics) if ($(`plot-${m.key}`) && $(`plot-${m.key}`).data) Plotly.Plots.resize(`plot-${m.key}`);
  }
}
window.addEventListener("hashchange", route);

let refreshPending = false;
function scheduleRefresh() {
  if (refreshPending) return;
  refreshPending = true;
  setTimeout(async () => {
    refreshPending = false;
    try {
      await Promise.all([loadProject(), loadItems(), loadFilters()]);
      if (state.view === "overview") renderOverview();
      if (state.view === "item" && state.current && state.item) {
        const i = state.items.names.indexOf(state.current);
        if (i >= 0 && state.items.status[i] !== state.item.status) showItem(state.current);
      }
    } catch (e) { /* next event retries */ }
  }, 200);
}
function isCurrent(d) {
  // an update event {revision, star_version, star_busy} that matches the data on the page
  const p = state.project, w = (p && p.star_writer) || {};
  return !!(p && state.items && d.revision === p.revision && d.revision === state.items.revision
    && d.star_version === w.version && d.star_busy === !!(w.writing || w.pending));
}
function connectEvents() {
  const es = new EventSource("/api/events");
  es.addEventListener("update", (ev) => {
    // the first event after connecting usually describes what the page already shows: skip the refetch
    let d = null;
    try { d = JSON.parse(ev.data); } catch (e) { /* refresh */ }
    if (d && isCurrent(d)) return;
    scheduleRefresh();
  });
  es.addEventListener("retrain", (ev) => { if (state.view === "item") renderRetrain(JSON.parse(ev.data)); });
  es.onopen = () => $("live").classList.add("on");
  es.onerror = () => $("live").classList.remove("on");
}

(async function main() {
  const t0 = performance.now();
  try {
    const [project, items, filters] = await Promise.all(window.cwPrefetch);
    state.project = project; state.items = items; state.metrics = items.metric_info; state.filters = filters;
    renderCounts(); renderNavbar();
  } catch (e) {
    try {
      await Promise.all([loadProject(), loadItems(), loadFilters()]);
    } catch (e2) {
      const banner = document.createElement("div");
      banner.id = "load-error";
      banner.textContent = `Cannot read the project: ${e2.message}`;
      document.body.prepend(banner);
      document.body.dataset.error = "1";
      return;
    }
  }
  const t1 = performance.now();
  route();
  connectEvents();
  document.body.dataset.ready = "1";
  // timings for benchmarks: script start (after Plotly parsed), data fetched, plots drawn
  Object.assign(document.body.dataset, { readyMs: String(Math.round(performance.now())), scriptStartMs: String(Math.round(t0)),
    fetchMs: String(Math.round(t1 - t0)), renderMs: String(Math.round(performance.now() - t1)) });
})();
