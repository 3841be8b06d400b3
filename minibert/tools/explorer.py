"""Attention pictures: a self-contained HTML explorer, and PNG heatmaps (matplotlib, the `viz` extra).

`attention_html(tokens, attentions, title)` writes one page whose script, style and data are inline: it
makes no network request. A head view draws a line from each token to each token it attends to, its
opacity the weight, for any set of heads of one layer; hovering a token keeps its lines alone. A model
view shows every layer x head as a small heatmap; clicking one opens it in the head view. Only real
tokens are shown: padding never appears. Weights are stored as bytes (weight x 255), deflated (most are
near 0) and base64-encoded; the browser inflates them with its own DecompressionStream. The page opens on
one head of the first layer, and draws the model view only when it is first shown, each heatmap one
putImageData, so that a 512-token page stays a few megabytes and opens in a moment.
"""

from __future__ import annotations

import base64
import html
import json
import re
import zlib
from pathlib import Path

import numpy as np


def attention_data(tokens: list[str], attentions, segments: list[int] | None = None) -> dict:
    """The page's data: `attentions` is one (N, T, T) array per layer over the T real tokens."""
    stack = np.stack([np.asarray(a, dtype=np.float32) for a in attentions])  # (layers, N, T, T)
    if stack.ndim != 4 or stack.shape[2:] != (len(tokens), len(tokens)):
        raise ValueError(f"attentions must be (heads, {len(tokens)}, {len(tokens)}) per layer, got {stack.shape}")
    weights = np.clip(np.rint(stack * 255), 0, 255).astype(np.uint8)
    return {
        "tokens": tokens,
        "segments": segments or [0] * len(tokens),
        "layers": stack.shape[0],
        "heads": stack.shape[1],
        "weights": base64.b64encode(zlib.compress(weights.tobytes(), 6)).decode("ascii"),  # deflate
    }


def attention_html(tokens: list[str], attentions, title: str = "", segments: list[int] | None = None) -> str:
    data = json.dumps(attention_data(tokens, attentions, segments), ensure_ascii=False)
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # safe inside <script>
    values = {"TITLE": html.escape(title or "attention"), "DATA": data}
    # one pass over the template: a title that holds "__DATA__" stays text, and the data is never searched
    return re.sub(r"__(TITLE|DATA)__", lambda m: values[m.group(1)], PAGE)


def attention_maps(model, batch: dict) -> list[np.ndarray]:
    """One (N, T, T) array of attention probabilities per layer for the one text in `batch` (no padding)."""
    import torch

    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    return [a[0].float().numpy() for a in out.attentions]


def write_png_heatmaps(tokens: list[str], attentions, folder, title: str = "") -> list[Path]:
    """One PNG per layer under `folder`: its heads in a grid, each an L x L heatmap with the wordpieces on
    both axes (rows: the attending token, columns: the token attended to)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "PNG heatmaps need matplotlib: pip install 'minibert-encoder[viz]' (from a clone: '.[viz]')"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minibert.formats.atomic import atomic_path

    matplotlib.rcParams["font.family"] = ["sans-serif"]
    matplotlib.rcParams["font.sans-serif"] = [
        "Noto Sans CJK JP",
        "Noto Sans CJK SC",
        "WenQuanYi Zen Hei",
        "DejaVu Sans",
    ]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, layer in enumerate(attentions):
        layer = np.asarray(layer, dtype=np.float32)
        heads = layer.shape[0]
        cols = min(4, heads)
        rows = -(-heads // cols)
        size = max(3.0, 0.18 * len(tokens) + 1.5)
        fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size), squeeze=False)
        for h, ax in enumerate(axes.flat):
            if h >= heads:
                ax.axis("off")
                continue
            ax.imshow(layer[h], cmap="Blues", vmin=0, vmax=1)
            ax.set_title(f"head {h}", fontsize=9)
            ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
            ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
        fig.suptitle(f"{title} layer {i}".strip())
        fig.tight_layout()
        path = folder / f"layer_{i:02d}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)
        written.append(path)
    return written


PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__ · minibert attention</title>
<style>
  body { font-family: system-ui, "Noto Sans", "Noto Sans CJK SC", "Noto Sans CJK JP", sans-serif; margin: 1.5em;
         color: #222; }
  h1 { font-size: 1.2em; margin: 0 0 .6em; }
  .tabs button { font: inherit; padding: .3em .9em; border: 1px solid #999; background: #eee; cursor: pointer; }
  .tabs button.active { background: #fff; border-bottom-color: #fff; font-weight: bold; }
  .panel { border: 1px solid #999; padding: 1em; }
  .controls { margin-bottom: .8em; }
  .controls label { margin-right: .6em; white-space: nowrap; }
  .swatch { display: inline-block; width: .8em; height: .8em; margin-right: .2em; vertical-align: middle; }
  #headview text { font-size: 13px; cursor: default; }
  #headview text.b { fill: #555; }
  #grid { display: grid; gap: 6px; align-items: center; }
  #grid canvas { cursor: pointer; border: 1px solid #ccc; image-rendering: pixelated; width: 100%; height: auto;
                 box-sizing: border-box; }
  #grid canvas:hover { border-color: #333; }
  #grid .label { font-size: 12px; color: #555; text-align: center; }
  .hint { color: #666; font-size: .9em; }
</style>
</head>
<body>
<h1>__TITLE__</h1>
<div class="tabs"><button id="tab-head" class="active">Head view</button><button id="tab-model">Model view</button>
</div>
<div class="panel" id="panel-head">
  <div class="controls">
    <label>Layer <select id="layer"></select></label>
    <span id="heads"></span>
    <button id="all">all heads</button> <button id="none">no heads</button>
  </div>
  <div class="hint">Lines run from each token (left) to the tokens it attends to (right); opacity is the weight.
    Hover a token to keep its lines alone.</div>
  <svg id="headview" xmlns="http://www.w3.org/2000/svg"></svg>
</div>
<div class="panel" id="panel-model" hidden>
  <div class="hint">Every layer (rows) and head (columns). Click one to open it in the head view.</div>
  <div id="grid"></div>
</div>
<script>
"use strict";
const DATA = __DATA__;
const T = DATA.tokens.length, LAYERS = DATA.layers, HEADS = DATA.heads;
let W = null;  // the weights, inflated at start (below)
async function inflate(base64) {
  const raw = atob(base64), bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
function weight(layer, head, from, to) { return W[((layer * HEADS + head) * T + from) * T + to] / 255; }
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
const color = h => COLORS[h % COLORS.length];
const state = { layer: 0, heads: new Set([0]), focus: null };  // one head first: all of them at once is a tangle
const NS = "http://www.w3.org/2000/svg";

const layerSelect = document.getElementById("layer");
for (let l = 0; l < LAYERS; l++) {
  const o = document.createElement("option"); o.value = l; o.textContent = l; layerSelect.appendChild(o);
}
layerSelect.addEventListener("change", () => { state.layer = +layerSelect.value; draw(); });
const headsBox = document.getElementById("heads");
const boxes = [];
for (let h = 0; h < HEADS; h++) {
  const label = document.createElement("label");
  const box = document.createElement("input"); box.type = "checkbox"; box.checked = state.heads.has(h);
  box.dataset.head = h;
  box.addEventListener("change", () => { box.checked ? state.heads.add(h) : state.heads.delete(h); draw(); });
  const sw = document.createElement("span"); sw.className = "swatch"; sw.style.background = color(h);
  label.append(box, sw, document.createTextNode(h)); headsBox.appendChild(label); boxes.push(box);
}
function setHeads(list) {
  state.heads = new Set(list);
  boxes.forEach((b, h) => { b.checked = state.heads.has(h); });
  draw();
}
document.getElementById("all").addEventListener("click", () => setHeads(boxes.map((_, h) => h)));
document.getElementById("none").addEventListener("click", () => setHeads([]));

const svg = document.getElementById("headview");
const ROW = 22, LEFT = 10, GAP = 260;
function textWidth() {
  const probe = document.createElementNS(NS, "text"); svg.appendChild(probe);
  let w = 0;
  for (const t of DATA.tokens) { probe.textContent = t; w = Math.max(w, probe.getComputedTextLength()); }
  svg.removeChild(probe); return Math.ceil(w) + 8;
}
let TW = 80;
function draw() {
  if (!W) return;  // still inflating
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const x1 = LEFT + TW, x2 = x1 + GAP;
  svg.setAttribute("width", x2 + TW + LEFT); svg.setAttribute("height", T * ROW + 20);
  const lines = document.createElementNS(NS, "g"); svg.appendChild(lines);
  for (const h of state.heads) {
    for (let i = 0; i < T; i++) {
      if (state.focus && state.focus.side === "a" && state.focus.index !== i) continue;
      for (let j = 0; j < T; j++) {
        if (state.focus && state.focus.side === "b" && state.focus.index !== j) continue;
        const w = weight(state.layer, h, i, j);
        if (w < 0.01) continue;
        const line = document.createElementNS(NS, "line");
        line.setAttribute("x1", x1); line.setAttribute("y1", 10 + i * ROW + ROW / 2);
        line.setAttribute("x2", x2); line.setAttribute("y2", 10 + j * ROW + ROW / 2);
        line.setAttribute("stroke", color(h)); line.setAttribute("stroke-width", 2);
        line.setAttribute("stroke-opacity", w.toFixed(3)); line.dataset.head = h;
        lines.appendChild(line);
      }
    }
  }
  DATA.tokens.forEach((t, i) => {
    for (const side of ["a", "b"]) {
      const text = document.createElementNS(NS, "text");
      text.textContent = t; text.setAttribute("y", 10 + i * ROW + ROW / 2 + 4);
      if (side === "a") { text.setAttribute("x", x1 - 6); text.setAttribute("text-anchor", "end"); }
      else { text.setAttribute("x", x2 + 6); text.setAttribute("class", "b"); }
      if (DATA.segments[i] === 1) text.setAttribute("font-style", "italic");
      text.dataset.side = side; text.dataset.index = i;
      text.addEventListener("mouseenter", () => { state.focus = {side, index: i}; draw(); });
      text.addEventListener("mouseleave", () => { state.focus = null; draw(); });
      svg.appendChild(text);
    }
  });
}

const grid = document.getElementById("grid");
let built = false;
function buildGrid() {  // on the first visit to the model view: one putImageData per head
  built = true;
  grid.style.gridTemplateColumns = `auto repeat(${HEADS}, minmax(0, 96px))`;  // shrinks to fit the panel
  grid.appendChild(document.createElement("div"));
  for (let h = 0; h < HEADS; h++) {
    const d = document.createElement("div"); d.className = "label"; d.textContent = "head " + h; grid.appendChild(d);
  }
  for (let l = 0; l < LAYERS; l++) {
    const d = document.createElement("div"); d.className = "label"; d.textContent = "layer " + l; grid.appendChild(d);
    for (let h = 0; h < HEADS; h++) {
      const c = document.createElement("canvas"); c.width = T; c.height = T;
      c.title = `layer ${l}, head ${h}`; c.dataset.layer = l; c.dataset.head = h;
      const g = c.getContext("2d"), image = g.createImageData(T, T), px = image.data;
      const base = (l * HEADS + h) * T * T;
      for (let k = 0; k < T * T; k++) {
        px[4 * k] = 31; px[4 * k + 1] = 119; px[4 * k + 2] = 180; px[4 * k + 3] = W[base + k];
      }
      g.putImageData(image, 0, 0);
      c.addEventListener("click", () => { layerSelect.value = l; state.layer = l; show("head"); setHeads([h]); });
      grid.appendChild(c);
    }
  }
}
function show(which) {
  if (which === "model" && !built) buildGrid();
  document.getElementById("panel-head").hidden = which !== "head";
  document.getElementById("panel-model").hidden = which !== "model";
  document.getElementById("tab-head").classList.toggle("active", which === "head");
  document.getElementById("tab-model").classList.toggle("active", which === "model");
}
document.getElementById("tab-head").addEventListener("click", () => show("head"));
document.getElementById("tab-model").addEventListener("click", () => show("model"));
inflate(DATA.weights).then(weights => {
  W = weights;
  TW = textWidth();
  draw();
  document.body.dataset.ready = "1";  // drawn: what a test (or a screenshot) waits for
});
</script>
</body>
</html>
"""
