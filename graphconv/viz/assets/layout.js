/* graphconv viz: the layered layout of a display model with nested, collapsible groups.
   A line-by-line twin of graphconv/viz/layout.py (its docstring explains the steps): the same numbers in, the
   same boxes and routes out, so what the browser draws after a click matches what Python drew first.
   GCLayout.layout(model, expanded) -> {width, height, boxes, clusters, routes, ranks, back_edges}
   where model is VizModel.to_json() and expanded a Set of group ids. */
"use strict";
const GCLayout = (() => {
  const GAP_X = 18, DUMMY_GAP = 12, RANK_GAP = 30, PORT_GAP = 18, PAD = 12, HEADER = 22, MARGIN = 16;
  const ORDER_SWEEPS = 8, PLACE_SWEEPS = 7, SPREAD = 14;
  const r2 = v => Math.round(v * 100) / 100;
  const dict = () => Object.create(null);
  const isIn = n => n.startsWith("in:");
  const isOut = n => n.startsWith("out:");
  const sum = a => { let s = 0; for (const v of a) s += v; return s; };

  function index(model) {
    if (!model.byId) {
      model.byId = dict();
      for (const x of model.leaves) model.byId[x.id] = x;
      for (const g of model.groups) model.byId[g.id] = g;
    }
    return model.byId;
  }

  function chainsOf(model) {
    const chains = dict();
    for (const g of model.groups) chains[g.id] = g.parent ? [...chains[g.parent], g.parent] : [];
    for (const x of model.leaves) chains[x.id] = x.group ? [...chains[x.group], x.group] : [];
    return chains;
  }

  function localEdges(model, open, chains) {
    const visible = leaf => { for (const g of chains[leaf]) if (!open.has(g)) return g; return leaf; };
    const local = dict(), seen = new Set();
    const add = (cid, src, dst, value, arrow) => {
      const key = cid + "\u0000" + src + "\u0000" + dst + "\u0000" + value;
      if (seen.has(key)) return;
      seen.add(key);
      (local[cid] = local[cid] || []).push([src, dst, value, arrow]);
    };
    for (const [src, dst, value] of model.edges) {
      const s = visible(src), d = visible(dst);
      if (s === d) continue;
      const ps = [...chains[s], s], pd = [...chains[d], d];
      let k = 0;
      while (ps[k] === pd[k]) k++;
      add(k > 0 ? ps[k - 1] : "", ps[k], pd[k], value, pd[k] === d);
      for (let j = k + 1; j < ps.length; j++) add(ps[j - 1], ps[j], "out:" + value, value, false);
      for (let j = k + 1; j < pd.length; j++) add(pd[j - 1], "in:" + value, pd[j], value, pd[j] === d);
    }
    return local;
  }

  function isotonic(targets, weights) {
    const blocks = [];  // [sum of weight * target, sum of weights, count]
    for (let i = 0; i < targets.length; i++) {
      blocks.push([weights[i] * targets[i], weights[i], 1]);
      while (blocks.length > 1 &&
             blocks[blocks.length - 2][0] / blocks[blocks.length - 2][1] >
             blocks[blocks.length - 1][0] / blocks[blocks.length - 1][1]) {
        const [s, sw, n] = blocks.pop();
        const top = blocks[blocks.length - 1];
        top[0] += s; top[1] += sw; top[2] += n;
      }
    }
    const out = [];
    for (const [s, sw, n] of blocks) for (let i = 0; i < n; i++) out.push(s / sw);
    return out;
  }

  function layCluster(kids, size, sub, edges, isGroup, headerW) {
    const key = dict();
    kids.forEach((c, i) => { key[c] = i; });
    const ins = [], outs = [];
    for (const [src, dst, v] of edges) {
      if (isIn(src) && !ins.includes(v)) ins.push(v);
      if (isOut(dst) && !outs.includes(v)) outs.push(v);
    }

    // 1. ranks: longest path in graph order; backward edges are drawn but not ranked
    const rank = dict();
    for (const v of ins) rank["in:" + v] = 0;
    const preds = dict();
    for (const c of kids) preds[c] = [];
    const kept = [], back = [];
    for (const e of edges) {
      const [src, dst] = e;
      if (isIn(src) || isOut(dst) || key[src] < key[dst]) {
        kept.push(e);
        if (dst in preds) preds[dst].push(src);
      } else {
        back.push(e);
      }
    }
    const base = ins.length ? 1 : 0;
    for (const c of kids) rank[c] = Math.max(base, ...preds[c].map(u => rank[u] + 1));
    const last = Math.max(...kids.map(c => rank[c])) + 1;
    for (const v of outs) rank["out:" + v] = last;
    const nRanks = outs.length ? last + 1 : last;

    // 2-3. the layered graph: ports, children and a dummy node per rank that a long edge passes
    const width = dict(), height = dict(), up = dict(), down = dict();
    for (const n in rank) { width[n] = 0; height[n] = 0; up[n] = []; down[n] = []; }
    for (const c of kids) { width[c] = size[c][0]; height[c] = size[c][1]; }
    let layers = Array.from({length: nRanks}, () => []);
    for (const v of ins) layers[0].push("in:" + v);
    for (const c of kids) layers[rank[c]].push(c);
    const offSrc = (src, v) => (src in sub ? sub[src].out_x[v] - sub[src].w / 2 : 0);
    const offDst = (dst, v) => (dst in sub ? sub[dst].in_x[v] - sub[dst].w / 2 : 0);
    const chains = [];
    kept.forEach(([src, dst, v], k) => {
      const chain = [src];
      for (let r = rank[src] + 1; r < rank[dst]; r++) {
        const d = "d" + k + ":" + r;
        rank[d] = r; width[d] = 0; height[d] = 0; up[d] = []; down[d] = [];
        layers[r].push(d);
        chain.push(d);
      }
      chain.push(dst);
      chains.push(chain);
      const os = offSrc(src, v), od = offDst(dst, v);
      for (let i = 0; i < chain.length - 1; i++) {
        const a = chain[i], b = chain[i + 1];
        const oa = i === 0 ? os : 0, ob = i === chain.length - 2 ? od : 0;
        down[a].push([b, oa, ob]);
        up[b].push([a, oa, ob]);
      }
    });
    for (const v of outs) layers[nRanks - 1].push("out:" + v);

    // 4. order within ranks
    const pos = dict();
    const number = () => { for (const layer of layers) layer.forEach((n, i) => { pos[n] = i; }); };
    number();
    const crossings = () => {
      let total = 0;
      for (let r = 0; r < nRanks - 1; r++) {
        const pairs = [];
        for (const a of layers[r]) for (const [b] of down[a]) pairs.push([pos[a], pos[b]]);
        for (let i = 0; i < pairs.length; i++)
          for (let j = i + 1; j < pairs.length; j++)
            if ((pairs[i][0] - pairs[j][0]) * (pairs[i][1] - pairs[j][1]) < 0) total++;
      }
      return total;
    };
    const reorder = (r, nbrs) => {
      const bary = dict();
      for (const n of layers[r]) {
        const ms = nbrs[n];
        bary[n] = ms.length ? sum(ms.map(([m]) => pos[m])) / ms.length : pos[n];
      }
      layers[r].sort((a, b) => (bary[a] - bary[b]) || (pos[a] - pos[b]));
      layers[r].forEach((n, i) => { pos[n] = i; });
    };
    let best = layers.map(l => [...l]), bestC = crossings();
    for (let it = 0; it < ORDER_SWEEPS; it++) {
      if (bestC === 0) break;
      if (it % 2 === 0) for (let r = 1; r < nRanks; r++) reorder(r, up);
      else for (let r = nRanks - 2; r >= 0; r--) reorder(r, down);
      const c = crossings();
      if (c < bestC) { best = layers.map(l => [...l]); bestC = c; }
    }
    layers = best;
    number();

    // 5. x: pull towards neighbours, then pack without overlaps
    const real = n => n in key;
    const sep = (a, b) => (width[a] + width[b]) / 2 + (real(a) && real(b) ? GAP_X : DUMMY_GAP);
    const below = dict();
    for (let r = nRanks - 1; r >= 0; r--)
      for (const n of layers[r]) below[n] = Math.max(0, ...down[n].map(([b]) => below[b] + 1));
    let longest = 0;
    for (const n in below) longest = Math.max(longest, rank[n] + below[n]);
    const weight = dict();
    for (const n in below) weight[n] = (real(n) ? 1.0 : 0.25) / (1 + 4 * (longest - rank[n] - below[n]));

    const x = dict();
    for (const layer of layers) {
      let cursor = 0;
      layer.forEach((n, i) => { if (i > 0) cursor += sep(layer[i - 1], n); x[n] = cursor; });
      for (const n of layer) x[n] -= cursor / 2;
    }
    const place = (r, goingDown) => {
      const layer = layers[r];
      const desired = layer.map(n => {  // the weighted mean of where the neighbours want it
        const ts = goingDown ? up[n].map(([a, oa, ob]) => [x[a] + oa - ob, weight[a]])
                             : down[n].map(([b, oa, ob]) => [x[b] + ob - oa, weight[b]]);
        return ts.length ? sum(ts.map(([t, w]) => t * w)) / sum(ts.map(([, w]) => w)) : x[n];
      });
      const cum = [0];
      for (let i = 1; i < layer.length; i++) cum.push(cum[i - 1] + sep(layer[i - 1], layer[i]));
      const targets = desired.map((d, i) => d - cum[i]);
      isotonic(targets, layer.map(n => weight[n])).forEach((y, i) => { x[layer[i]] = y + cum[i]; });
    };
    for (let it = 0; it < PLACE_SWEEPS; it++) {
      if (it % 2 === 0) for (let r = 1; r < nRanks; r++) place(r, true);
      else for (let r = nRanks - 2; r >= 0; r--) place(r, false);
    }

    if (ins.length === 1 && outs.length === 1)  // enter right above the exit: a chain of such groups stays straight
      x["in:" + ins[0]] = x["out:" + outs[0]];

    let left = Infinity, right = -Infinity;
    for (const n in x) { left = Math.min(left, x[n] - width[n] / 2); right = Math.max(right, x[n] + width[n] / 2); }
    let w = right - left + 2 * PAD;
    let shift = PAD - left;
    if (isGroup && w < headerW + 2 * PAD) {
      shift += (headerW + 2 * PAD - w) / 2;
      w = headerW + 2 * PAD;
    }
    for (const n in x) x[n] += shift;

    // y: ranks as tall as their tallest box
    let tops = [];
    const heights = [];
    let y = (isGroup ? HEADER : 0) + PAD;
    layers.forEach((layer, r) => {
      const hr = Math.max(0, ...layer.map(n => height[n]));
      tops.push(y);
      heights.push(hr);
      const portsNext = (r === 0 && ins.length) || (r === nRanks - 2 && outs.length);  // a row of ports is a border
      y += hr + (portsNext ? PORT_GAP : RANK_GAP);
    });
    let h = tops[tops.length - 1] + heights[heights.length - 1] + PAD;
    if (!isGroup) {
      w += 2 * (MARGIN - PAD);
      h += 2 * (MARGIN - PAD);
      for (const n in x) x[n] += MARGIN - PAD;
      tops = tops.map(t => t + MARGIN - PAD);
    }
    const ypos = dict();
    for (const n in x) ypos[n] = tops[rank[n]] + heights[rank[n]] / 2;

    // routes: box bottom (or entry port) -> dummies -> box top (or exit port)
    const start = (n, off) => (isIn(n) ? [x[n], 0] : [x[n] + off, ypos[n] + height[n] / 2]);
    const end = (n, off) => (isOut(n) ? [x[n], h] : [x[n] + off, ypos[n] - height[n] / 2]);
    const routes = [];
    kept.forEach(([src, dst, v, arrow], k) => {
      const pts = [start(src, offSrc(src, v))];
      for (const d of chains[k].slice(1, -1))
        pts.push([x[d], tops[rank[d]]], [x[d], tops[rank[d]] + heights[rank[d]]]);
      pts.push(end(dst, offDst(dst, v)));
      routes.push({value: v, points: pts, arrow, src, dst});
    });
    for (const [src, dst, v, arrow] of back)
      routes.push({value: v, points: [start(src, offSrc(src, v)), end(dst, offDst(dst, v))], arrow, src, dst});

    // edges converging on one box end side by side, in the order they arrive
    for (const c of kids) {
      if (c in sub) continue;
      const into = routes.filter(r => r.dst === c);
      if (into.length < 2) continue;
      into.sort((a, b) => a.points[a.points.length - 2][0] - b.points[b.points.length - 2][0]);
      const step = Math.min(SPREAD, (width[c] - 16) / (into.length - 1));
      into.forEach((r, i) => {
        r.points[r.points.length - 1] = [x[c] - step * (into.length - 1) / 2 + i * step,
                                         r.points[r.points.length - 1][1]];
      });
    }

    const posOut = dict(), rankOut = dict(), inX = dict(), outX = dict();
    for (const c of kids) { posOut[c] = [x[c], ypos[c]]; rankOut[c] = rank[c]; }
    for (const v of ins) inX[v] = x["in:" + v];
    for (const v of outs) outX[v] = x["out:" + v];
    return {w, h, kids, pos: posOut, size, rank: rankOut, in_x: inX, out_x: outX, routes, sub, back: back.length};
  }

  function layout(model, expanded) {
    const byId = index(model);
    const chains = chainsOf(model);
    const local = localEdges(model, expanded, chains);
    const children = cid => (cid === "" ? model.roots : byId[cid].children);
    const lay = cid => {
      const kids = children(cid);
      const sub = dict(), size = dict();
      for (const c of kids) if (expanded.has(c)) sub[c] = lay(c);
      for (const c of kids) size[c] = c in sub ? [sub[c].w, sub[c].h] : [byId[c].w, byId[c].h];
      return layCluster(kids, size, sub, local[cid] || [], cid !== "", cid ? byId[cid].header_w : 0);
    };
    const root = lay("");
    const out = {width: r2(root.w), height: r2(root.h), boxes: dict(), clusters: dict(), routes: [],
                 ranks: dict(), back_edges: 0};
    const place = (cl, cid, ox, oy) => {
      out.back_edges += cl.back;
      for (const c of cl.kids) {
        const [x, y] = cl.pos[c], [w, h] = cl.size[c];
        const box = {x: r2(ox + x - w / 2), y: r2(oy + y - h / 2), w, h};
        out.ranks[c] = [cid, cl.rank[c]];
        if (c in cl.sub) {
          out.clusters[c] = box;
          place(cl.sub[c], c, ox + x - w / 2, oy + y - h / 2);
        } else {
          out.boxes[c] = box;
        }
      }
      for (const r of cl.routes)
        out.routes.push({value: r.value, points: r.points.map(([px, py]) => [r2(ox + px), r2(oy + py)]),
                         arrow: r.arrow, src: r.src, dst: r.dst});
    };
    place(root, "", 0, 0);
    return out;
  }

  return {layout, HEADER};
})();
if (typeof module !== "undefined") module.exports = GCLayout;
