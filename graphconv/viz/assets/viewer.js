/* graphconv viz: the viewer. Reads the display model from #gc-data, lays it out with GCLayout (layout.js) and
   draws the same elements graphconv/viz/svg.py writes. Clicking a collapsed group expands it, clicking an expanded
   group's title bar collapses it; either way the drawing is laid out again. Hovering or clicking a box shows its
   details in the side panel. The URL hash keeps the view: #depth=2&expand=layer1.bottleneck0&collapse=layer2
   &select=fc&search=conv.
   Everything taken from the model goes in as text (textContent, setAttribute), never as markup: names come from
   specs and ONNX models. */
(() => {
  "use strict";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const LINE_H = 14, PAD_X = 8, PAD_Y = 5, STACK = 3, HEADER = GCLayout.HEADER;
  const ZOOMS = [0.25, 0.33, 0.5, 0.67, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2, 3];

  const model = JSON.parse(document.getElementById("gc-data").textContent);
  const byId = Object.create(null);
  for (const x of model.leaves) byId[x.id] = x;
  for (const g of model.groups) byId[g.id] = g;
  model.byId = byId;
  const groupByName = new Map(model.groups.map(g => [g.name, g]));
  const leafByName = new Map(model.leaves.filter(x => x.kind === "node").map(x => [x.name, x]));
  const producerOf = new Map();  // value name -> id of the leaf that makes it
  const valuesOf = new Map(model.leaves.map(x => [x.id, new Set()]));  // leaf id -> values in and out
  for (const [src, dst, v] of model.edges) {
    producerOf.set(model.values[v].name, src);
    valuesOf.get(src).add(v);
    valuesOf.get(dst).add(v);
  }
  const maxDepth = Math.max(0, ...model.groups.map(g => g.depth));
  const initialDepth = model.view.depth;

  const canvas = document.getElementById("gc-canvas");
  const panel = document.getElementById("gc-panel");
  const search = document.getElementById("gc-search");
  const status = document.getElementById("gc-status");
  const state = {expanded: new Set(), pinned: null, zoom: 1, query: ""};
  let lay = null;

  // -- helpers ------------------------------------------------------------------------------------------------------
  const el = (tag, attrs, ...kids) => {
    const e = document.createElementNS(SVG_NS, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    for (const kid of kids) e.append(kid);
    return e;
  };
  const html = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const n2 = v => String(Math.round(v * 100) / 100);
  const ancestors = id => {
    const out = [];
    for (let g = byId[id].group !== undefined ? byId[id].group : byId[id].parent; g; g = byId[g].parent) out.push(g);
    return out;
  };
  const groupsToDepth = d => new Set(model.groups.filter(g => g.depth <= d).map(g => g.id));

  function pathData(points) {
    const pts = points.filter((p, i) => i === 0 || p[0] !== points[i - 1][0] || p[1] !== points[i - 1][1]);
    let d = "M" + n2(pts[0][0]) + "," + n2(pts[0][1]);
    for (let i = 1; i < pts.length; i++) {
      const [x0, y0] = pts[i - 1], [x1, y1] = pts[i];
      if (x0 === x1 || y1 <= y0) d += "L" + n2(x1) + "," + n2(y1);
      else {
        const m = (y1 - y0) / 2;
        d += "C" + n2(x0) + "," + n2(y0 + m) + " " + n2(x1) + "," + n2(y1 - m) + " " + n2(x1) + "," + n2(y1);
      }
    }
    return d;
  }

  function label(lines) {
    const t = el("text");
    lines.forEach((line, i) => {
      const span = el("tspan", {x: PAD_X, y: n2(PAD_Y + LINE_H * (i + 1) - 3.5)});
      if (i === 0) span.setAttribute("class", "t0");
      span.textContent = line;
      t.append(span);
    });
    return t;
  }

  // -- drawing ------------------------------------------------------------------------------------------------------
  function render() {
    lay = GCLayout.layout(model, state.expanded);
    const svg = el("svg", {class: "gc-graph", viewBox: `0 0 ${n2(lay.width)} ${n2(lay.height)}`,
                           "data-rendered": "js"});
    const marker = el("marker", {id: "gc-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9,
                                 markerHeight: 9, markerUnits: "userSpaceOnUse", orient: "auto"},
                      el("path", {d: "M0,1 L10,5 L0,9 z"}));
    svg.append(el("defs", {}, marker));
    const clusters = el("g", {class: "gc-clusters"}), edges = el("g", {class: "gc-edges"});
    const items = el("g", {class: "gc-items"}), headers = el("g", {class: "gc-headers"});
    for (const gid in lay.clusters) {
      const b = lay.clusters[gid], g = byId[gid];
      clusters.append(el("rect", {class: `gc-cluster d${g.depth % 4}`, "data-group": gid, x: n2(b.x), y: n2(b.y),
                                  width: n2(b.w), height: n2(b.h), rx: 6}));
      const title = el("title");
      title.textContent = `${g.name}: click to collapse`;
      const text = el("text", {x: PAD_X, y: 15});
      text.textContent = g.header;
      headers.append(el("g", {class: `gc-header d${g.depth % 4}`, "data-group": gid,
                              transform: `translate(${n2(b.x)},${n2(b.y)})`},
                        title, el("rect", {width: n2(b.w), height: HEADER, rx: 6}), text));
    }
    for (const r of lay.routes) {
      const v = model.values[r.value];
      const path = el("path", {class: "gc-edge", "data-value": r.value, d: pathData(r.points)});
      if (r.arrow) path.setAttribute("marker-end", "url(#gc-arrow)");
      const title = el("title");
      title.textContent = `${v.name}: ${v.type}`;
      path.append(title);
      edges.append(path);
    }
    for (const id in lay.boxes) {
      const b = lay.boxes[id], x = byId[id];
      const pos = `translate(${n2(b.x)},${n2(b.y)})`;
      if (x.children) {
        items.append(el("g", {class: "gc-node gc-collapsed", "data-group": id, transform: pos},
                        el("rect", {class: "gc-stack", x: STACK, y: STACK, width: n2(b.w - STACK),
                                    height: n2(b.h - STACK), rx: 4}),
                        el("rect", {width: n2(b.w - STACK), height: n2(b.h - STACK), rx: 4}), label(x.lines)));
      } else {
        items.append(el("g", {class: `gc-node cat-${x.cat}`, "data-node": id, transform: pos},
                        el("rect", {width: n2(b.w), height: n2(b.h), rx: 4}), label(x.lines)));
      }
    }
    svg.append(clusters, edges, items, headers);
    canvas.replaceChildren(svg);
    applyZoom();
    highlight();
    const shown = Object.keys(lay.boxes).length;
    status.textContent = `${shown} boxes · ${state.expanded.size}/${model.groups.length} groups open`;
  }

  function applyZoom() {
    const svg = canvas.querySelector("svg");
    if (!svg || !lay) return;
    svg.setAttribute("width", n2(lay.width * state.zoom));
    svg.setAttribute("height", n2(lay.height * state.zoom));
    document.getElementById("gc-zoom").textContent = Math.round(state.zoom * 100) + "%";
  }

  // -- selection, search --------------------------------------------------------------------------------------------
  function matches(x) {
    return state.query && x.name.toLowerCase().includes(state.query);
  }

  function highlight() {
    const svg = canvas.querySelector("svg");
    if (!svg) return;
    let shown = 0, hidden = 0;
    const inside = new Set();
    if (state.query) {
      for (const x of model.leaves) {
        if (!matches(x)) continue;
        if (x.id in lay.boxes) { shown++; continue; }
        hidden++;
        for (const g of ancestors(x.id)) inside.add(g);
      }
      for (const g of model.groups) if (matches(g)) for (const a of [g.id, ...ancestors(g.id)]) inside.add(a);
    }
    for (const node of svg.querySelectorAll(".gc-node")) {
      const id = node.dataset.node || node.dataset.group;
      node.classList.toggle("gc-match", state.query !== "" && (node.dataset.node ? matches(byId[id]) : inside.has(id)));
      node.classList.toggle("gc-sel", id === state.pinned);
    }
    const hot = state.pinned && valuesOf.has(state.pinned) ? valuesOf.get(state.pinned) : new Set();
    for (const path of svg.querySelectorAll(".gc-edge")) path.classList.toggle("gc-hi", hot.has(+path.dataset.value));
    const count = document.getElementById("gc-count");
    count.textContent = state.query ? `${shown} shown` + (hidden ? `, ${hidden} in closed groups (Enter opens)` : "")
                                    : "";
  }

  function reveal(id) {
    for (const g of ancestors(id)) state.expanded.add(g);
  }

  function scrollToItem(id) {
    const node = canvas.querySelector(`[data-node="${id}"], .gc-collapsed[data-group="${id}"], ` +
                                      `.gc-header[data-group="${id}"]`);
    if (node) node.scrollIntoView({block: "center", inline: "center"});
  }

  // -- the details panel --------------------------------------------------------------------------------------------
  function row(table, key, value, onClick) {
    const tr = html("tr");
    tr.append(html("th", null, key));
    const td = html("td");
    if (onClick) {
      const a = html("a", "gc-link", value);
      a.href = "#";
      a.addEventListener("click", ev => { ev.preventDefault(); onClick(); });
      td.append(a);
    } else {
      td.textContent = value;
    }
    tr.append(td);
    table.append(tr);
  }

  function section(title) {
    panel.append(html("h3", null, title));
    const table = html("table");
    panel.append(table);
    return table;
  }

  function goTo(leafId) {
    reveal(leafId);
    state.pinned = leafId;
    render();
    showDetails(leafId);
    scrollToItem(leafId);
    writeHash();
  }

  let shownId;
  function showDetails(id) {
    if (id === shownId && panel.firstChild) return;
    shownId = id;
    panel.replaceChildren();
    if (!id) {
      panel.append(html("p", "gc-hint", "Hover over a box for its details; click to keep them here. Click a " +
                        "collapsed group to open it, its title bar to close it again."));
      return;
    }
    const x = byId[id];
    if (x.children) {  // a group
      panel.append(html("h2", null, x.name), html("p", "gc-sub", "group"));
      const t = section("Summary");
      row(t, "layers", x.layers.toLocaleString("en-US"));
      row(t, "params", x.params.toLocaleString("en-US"));
      row(t, "out", x.shapes.join(", "));
      const c = section("Contents");
      for (const kid of x.children) {
        const k = byId[kid];
        row(c, k.children ? "group" : k.op, k.name.split(".").pop(), () => goTo(kid));
      }
      return;
    }
    const info = x.info;
    panel.append(html("h2", null, x.name), html("p", "gc-sub", x.kind === "node" ? x.op : x.kind));
    if (info.fused) {
      const t = section("Fused");
      row(t, "epilogue", info.fused);
    }
    if (info.inputs && info.inputs.length) {
      const t = section(x.kind === "output" ? "Value" : "Inputs");
      info.inputs.forEach((v, i) => {
        const src = producerOf.get(v.name);
        row(t, x.kind === "output" ? "value" : String(i), `${v.name}  ${v.type}`, src ? () => goTo(src) : null);
      });
    }
    if (info.outputs && info.outputs.length) {
      const t = section("Output");
      for (const v of info.outputs) row(t, "value", `${v.name}  ${v.type}`);
      for (const name of info.used_by || []) {
        const user = leafByName.get(name);
        row(t, "used by", name, user ? () => goTo(user.id) : null);
      }
      for (const name of info.graph_outputs || []) row(t, "output", name);
    }
    if (info.attrs && info.attrs.length) {
      const t = section("Attributes");
      for (const [k, v] of info.attrs) row(t, k, v);
    }
    if (info.params && info.params.length) {
      const t = section(`Parameters (${x.params.toLocaleString("en-US")} counted)`);
      for (const p of info.params)
        row(t, p.role, `${p.type} ${p.kind}` + (p.init ? `, init ${p.init}` : "") + ` (${p.name})`);
    }
    if (x.kind === "node") {
      const t = section("Source");
      row(t, "at", info.loc || "unknown");
      if (info.loc_note) row(t, "", info.loc_note);
    }
  }

  // -- state in the URL hash ----------------------------------------------------------------------------------------
  function readHash() {
    const raw = new Map();
    for (const part of location.hash.replace(/^#/, "").split("&")) {
      const i = part.indexOf("=");
      if (i > 0) raw.set(part.slice(0, i), part.slice(i + 1));
    }
    const decode = text => { try { return decodeURIComponent(text); } catch (e) { return text; } };
    const params = new Map([...raw].map(([k, v]) => [k, decode(v)]));
    const names = key => (raw.get(key) || "").split(",").map(decode);
    const depth = params.get("depth");
    const d = depth === "all" ? maxDepth : (depth !== undefined && /^\d+$/.test(depth) ? +depth : initialDepth);
    state.expanded = groupsToDepth(d);
    state.base = d;
    for (const name of names("expand")) {
      const g = groupByName.get(name);
      if (g) { state.expanded.add(g.id); reveal(g.id); }
    }
    for (const name of names("collapse")) {
      const g = groupByName.get(name);
      if (g) state.expanded.delete(g.id);
    }
    const sel = params.get("select");
    const leaf = sel ? leafByName.get(sel) : null;
    state.pinned = leaf ? leaf.id : (sel && groupByName.get(sel) ? groupByName.get(sel).id : null);
    if (leaf) reveal(leaf.id);
    state.query = (params.get("search") || "").toLowerCase();
    search.value = params.get("search") || "";
  }

  function writeHash() {
    const base = groupsToDepth(state.base);
    const enc = ids => ids.map(id => encodeURIComponent(byId[id].name)).join(",");
    const expand = [...state.expanded].filter(id => !base.has(id));
    const collapse = [...base].filter(id => !state.expanded.has(id));
    const parts = [];
    if (state.base !== initialDepth) parts.push("depth=" + state.base);
    if (expand.length) parts.push("expand=" + enc(expand));
    if (collapse.length) parts.push("collapse=" + enc(collapse));
    if (state.pinned) parts.push("select=" + encodeURIComponent(byId[state.pinned].name));
    if (state.query) parts.push("search=" + encodeURIComponent(search.value));
    const hash = parts.length ? "#" + parts.join("&") : "";
    if (hash !== location.hash) history.replaceState(null, "", hash || location.pathname + location.search);
  }

  // -- actions ------------------------------------------------------------------------------------------------------
  function toggle(gid) {
    // keep the clicked group where it is on the screen while everything around it moves
    const before = canvas.querySelector(`[data-group="${gid}"]`);
    const r0 = before ? before.getBoundingClientRect() : null;
    if (state.expanded.has(gid)) state.expanded.delete(gid);
    else state.expanded.add(gid);
    render();
    const after = canvas.querySelector(`.gc-header[data-group="${gid}"], .gc-collapsed[data-group="${gid}"]`);
    if (r0 && after) {
      const r1 = after.getBoundingClientRect();
      canvas.scrollLeft += r1.left - r0.left;
      canvas.scrollTop += r1.top - r0.top;
    }
    writeHash();
  }

  function setDepth(d) {
    state.base = Math.max(0, Math.min(maxDepth, d));
    state.expanded = groupsToDepth(state.base);
    render();
    writeHash();
  }

  function zoomBy(step) {
    let i = ZOOMS.findIndex(z => z >= state.zoom - 1e-9);
    if (i < 0) i = ZOOMS.length - 1;
    state.zoom = ZOOMS[Math.max(0, Math.min(ZOOMS.length - 1, i + step))];
    applyZoom();
  }

  function fit() {
    if (!lay) return;
    state.zoom = Math.min(1, (canvas.clientWidth - 20) / lay.width, (canvas.clientHeight - 20) / lay.height);
    state.zoom = Math.max(0.1, state.zoom);
    applyZoom();
  }

  const actions = {
    "expand-all": () => setDepth(maxDepth),
    "collapse-all": () => setDepth(0),
    "depth-up": () => setDepth(state.base + 1),
    "depth-down": () => setDepth(state.base - 1),
    "zoom-in": () => zoomBy(1),
    "zoom-out": () => zoomBy(-1),
    "zoom-fit": fit,
    "zoom-reset": () => { state.zoom = 1; applyZoom(); },
  };

  // -- events -------------------------------------------------------------------------------------------------------
  document.querySelector(".gc-bar").addEventListener("click", ev => {
    const b = ev.target.closest("button[data-act]");
    if (b) actions[b.dataset.act]();
  });

  canvas.addEventListener("click", ev => {
    const header = ev.target.closest(".gc-header");
    const group = ev.target.closest(".gc-collapsed");
    const node = ev.target.closest(".gc-node[data-node]");
    if (header) toggle(header.dataset.group);
    else if (group) toggle(group.dataset.group);
    else if (node) {
      state.pinned = state.pinned === node.dataset.node ? null : node.dataset.node;
      highlight();
      showDetails(state.pinned || node.dataset.node);
      writeHash();
    } else if (state.pinned) {
      state.pinned = null;
      highlight();
      showDetails(null);
      writeHash();
    }
  });

  canvas.addEventListener("mouseover", ev => {
    const item = ev.target.closest(".gc-node, .gc-header");
    showDetails(item ? item.dataset.node || item.dataset.group : state.pinned);
  });
  canvas.addEventListener("mouseleave", () => showDetails(state.pinned));

  search.addEventListener("input", () => {
    state.query = search.value.trim().toLowerCase();
    highlight();
  });
  search.addEventListener("change", writeHash);
  search.addEventListener("keydown", ev => {
    if (ev.key === "Enter" && state.query) {
      const found = model.leaves.filter(matches);
      for (const x of found) reveal(x.id);
      render();
      if (found.length) scrollToItem(found[0].id);
      writeHash();
    } else if (ev.key === "Escape") {
      search.value = "";
      state.query = "";
      highlight();
      search.blur();
      writeHash();
    }
  });

  document.addEventListener("keydown", ev => {
    if (ev.target === search || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const keys = {e: "expand-all", c: "collapse-all", "+": "zoom-in", "=": "zoom-in", "-": "zoom-out",
                  f: "zoom-fit", "0": "zoom-reset", "]": "depth-up", "[": "depth-down"};
    if (ev.key === "/") { ev.preventDefault(); search.focus(); }
    else if (ev.key === "Escape") { state.pinned = null; highlight(); showDetails(null); writeHash(); }
    else if (/^[1-9]$/.test(ev.key)) setDepth(+ev.key);
    else if (keys[ev.key]) actions[keys[ev.key]]();
  });

  window.addEventListener("hashchange", () => { readHash(); render(); showDetails(state.pinned); });

  readHash();
  render();
  showDetails(state.pinned);
  if (state.pinned) scrollToItem(state.pinned);
})();
