// maskstore frame viewer (spec section 9). No build step, no dependencies.
//
// The server sends a source as raw RGB bytes and each mask as a plane of label indexes (k + 1 into
// the version's label table, 0 = no label) or of alpha levels. The page blends them with the exact
// integer arithmetic of spec section 6, so the canvas holds render()'s bytes and an opacity or colour
// change is one pass over the pixels, with no request.
"use strict";
(() => {
  const PAGE = 100;           // ids per list page: a selection never travels whole
  const PIXEL_CACHE = 20;     // sources and planes kept (current frame, its neighbour, a few behind)
  const FRAME_CACHE = 32;
  const DEFAULT_SETTING = { visible: true, mode: "segmentation", opacity: 50, tint: "#000000" };

  const params = new URLSearchParams(location.search);
  const token = params.get("token") || "";
  const $ = (id) => document.getElementById(id);
  const canvas = $("frame-canvas");
  const ctx = canvas.getContext("2d");
  const viewport = $("viewport");
  const stage = $("stage");
  const roiLayer = $("roi-layer");

  const state = {
    info: null,             // /api/version: names, state, writable, label table
    query: params.get("q") || "",
    count: 0,
    index: -1,              // position of the shown frame in the selection (-1: opened by id, not in it)
    listOffset: 0,
    pages: new Map(),       // offset -> ids of the current selection
    frame: null,
    sourceId: params.get("source"),
    layers: [],             // masks of the shown source: {id, labels, alpha, present, error}
    src: null,              // {data: Uint32Array of opaque RGBA words, width, height}
    image: null,            // ImageData the canvas is painted from
    pageColors: {},         // label -> [r, g, b] not (yet) saved to the version
    settings: new Map(),    // mask id -> {visible, mode, opacity, tint}, kept while stepping frames
    view: { scale: 1, x: 0, y: 0, fitted: true },
    generation: 0,          // bumps on every frame/source change; late answers are dropped
    lastDrawMs: 0,
  };
  window.maskstoreViewer = state;  // for benchmarks and debugging

  // ------------------------------------------------------------------------------------------ fetching

  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  async function getJSON(path, query) {
    const response = await fetch(`${path}?${new URLSearchParams(query)}`);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new ApiError(body.error || response.statusText, response.status);
    return body;
  }

  function remember(cache, limit, key, make) {
    if (!cache.has(key)) {
      const promise = make();
      promise.catch(() => cache.delete(key));  // a failure is not kept: the next look retries
      cache.set(key, promise);
      while (cache.size > limit) cache.delete(cache.keys().next().value);
    }
    return cache.get(key);
  }

  const frameCache = new Map();
  const frameDict = (id) => remember(frameCache, FRAME_CACHE, id, () => getJSON("/api/frame", { id }));

  const pixelCache = new Map();
  function pixels(query) {
    const key = new URLSearchParams(query).toString();
    return remember(pixelCache, PIXEL_CACHE, key, async () => {
      const response = await fetch(`/api/pixels?${key}`);
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new ApiError(body.error || response.statusText, response.status);
      }
      const buffer = await response.arrayBuffer();
      const types = { uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array };
      const Type = types[response.headers.get("X-Dtype")] || Uint8Array;
      const data = new Type(buffer);
      return { data: query.kind === "source" ? opaqueWords(data) : data, width: +response.headers.get("X-Width"),
               height: +response.headers.get("X-Height") };
    });
  }

  function opaqueWords(rgb) {
    // RGB bytes -> one little-endian RGBA word per pixel (A = 255), once per source: every redraw then
    // moves whole pixels
    const words = new Uint32Array(rgb.length / 3);
    for (let i = 0, k = 0; i < words.length; i++, k += 3) {
      words[i] = 0xff000000 | (rgb[k + 2] << 16) | (rgb[k + 1] << 8) | rgb[k];
    }
    return words;
  }

  // ------------------------------------------------------------------------------------------ blending
  // Spec section 6, in integers: a = floor(opacity * 255 + 0.5); x / 255 | 0 is floor for x >= 0.

  const alphaOf = (percent) => Math.floor(percent / 100 * 255 + 0.5);

  function hexToRgb(hex) {
    return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  }
  const rgbToHex = (rgb) => "#" + rgb.map((c) => c.toString(16).padStart(2, "0")).join("");

  function labelColors() {
    // index k + 1 -> colour of label k; the page's unsaved colours win
    const colors = [null];
    for (const { name, color } of state.info.labels) colors.push(state.pageColors[name] || color);
    return colors;
  }

  function segmentationPass(from, to, labels, setting, colors) {
    // labelled pixel: (src * (255 - a) + colour * a + 127) // 255; unlabelled: src
    const a = alphaOf(setting.opacity);
    const lut = new Uint8Array(colors.length * 768);
    for (let k = 1; k < colors.length; k++) {
      for (let c = 0; c < 3; c++) {
        const base = k * 768 + c * 256, term = colors[k][c] * a + 127;
        for (let s = 0; s < 256; s++) lut[base + s] = (s * (255 - a) + term) / 255 | 0;
      }
    }
    const n = labels.length, count = colors.length;
    for (let i = 0; i < n; i++) {
      const w = from[i], k = labels[i];
      if (k !== 0 && k < count) {
        const b = k * 768;
        to[i] = 0xff000000 | (lut[b + 512 + ((w >>> 16) & 255)] << 16) | (lut[b + 256 + ((w >>> 8) & 255)] << 8)
          | lut[b + (w & 255)];
      } else {
        to[i] = w;
      }
    }
  }

  function tintPass(from, to, alpha, setting) {
    // t = ((255 - alpha) * a + 127) // 255; pixel = (src * (255 - t) + tint * t + 127) // 255
    const a = alphaOf(setting.opacity), tint = hexToRgb(setting.tint);
    const lut = new Uint8Array(256 * 768);
    for (let level = 0; level < 256; level++) {
      const t = ((255 - level) * a + 127) / 255 | 0;
      for (let c = 0; c < 3; c++) {
        const base = level * 768 + c * 256, term = tint[c] * t + 127;
        for (let s = 0; s < 256; s++) lut[base + s] = (s * (255 - t) + term) / 255 | 0;
      }
    }
    const n = alpha.length;
    for (let i = 0; i < n; i++) {
      const w = from[i], b = alpha[i] * 768;
      to[i] = 0xff000000 | (lut[b + 512 + ((w >>> 16) & 255)] << 16) | (lut[b + 256 + ((w >>> 8) & 255)] << 8)
        | lut[b + (w & 255)];
    }
  }

  function draw() {
    if (!state.src) return;
    const start = performance.now();
    const out = new Uint32Array(state.image.data.buffer);
    const colors = labelColors();
    let from = state.src.data;  // the first mask reads the source, each later one the result so far
    for (const layer of state.layers) {  // in the order of the source's masks
      const setting = settingOf(layer.id);
      if (!setting.visible || layer.error) continue;
      if (setting.mode === "alpha" && layer.alpha) tintPass(from, out, layer.alpha.data, setting);
      else if (setting.mode === "segmentation" && layer.labels) segmentationPass(from, out, layer.labels.data, setting, colors);
      else continue;
      from = out;
    }
    if (from !== out) out.set(from);
    ctx.putImageData(state.image, 0, 0);
    state.lastDrawMs = performance.now() - start;
  }

  // ------------------------------------------------------------------------------------------ selection

  function showQueryProblems(error, warnings) {
    $("query-error").textContent = error;
    $("query-error").hidden = !error;
    $("query-warning").textContent = (warnings || []).join("\n");
    $("query-warning").hidden = !(warnings && warnings.length);
  }

  async function applyQuery(query, frameId) {
    let body;
    try {
      body = await getJSON("/api/frames", { q: query, offset: 0, limit: PAGE, ...(frameId ? { frame: frameId } : {}) });
    } catch (error) {
      showQueryProblems(error.message, []);
      if (frameId) await openFrame(frameId, -1);
      return;
    }
    showQueryProblems("", body.warnings);
    state.query = query;
    state.count = body.count;
    state.pages = new Map([[0, body.ids]]);
    $("frame-count").textContent = String(body.count);
    if (frameId && body.position === -1) {
      await openFrame(frameId, -1);
    } else if (body.count > 0) {
      await goTo(frameId ? body.position : 0);
    } else {
      clearFrame("no frame matches this query");
      renderList(0);
    }
  }

  async function page(offset) {
    if (!state.pages.has(offset)) {
      const body = await getJSON("/api/frames", { q: state.query, offset, limit: PAGE });
      state.pages.set(offset, body.ids);
    }
    return state.pages.get(offset);
  }

  async function idAt(index) {
    const offset = Math.floor(index / PAGE) * PAGE;
    return (await page(offset))[index - offset];
  }

  async function goTo(index) {
    if (state.count === 0) return;
    index = Math.min(Math.max(index, 0), state.count - 1);
    await openFrame(await idAt(index), index);
  }

  const step = (delta) => goTo(state.index < 0 ? 0 : state.index + delta);

  async function renderList(offset) {
    state.listOffset = offset;
    const ids = state.count ? await page(offset) : [];
    const list = $("frame-list");
    list.replaceChildren(...ids.map((id, i) => {
      const item = document.createElement("li");
      item.setAttribute("data-testid", "frame-item");
      item.dataset.frameId = id;
      item.title = id;
      const number = document.createElement("span");
      number.className = "n";
      number.textContent = String(offset + i + 1);
      item.append(number, id);
      if (state.frame && id === state.frame.id) item.setAttribute("aria-current", "true");
      item.addEventListener("click", () => goTo(offset + i));
      return item;
    }));
    const last = Math.min(offset + PAGE, state.count);
    $("page-info").textContent = state.count ? `${offset + 1}–${last} of ${state.count}` : "0 of 0";
    const current = list.querySelector('[aria-current="true"]');
    if (current) current.scrollIntoView({ block: "nearest" });
  }

  // ------------------------------------------------------------------------------------------ frames

  function settingOf(maskId) {
    if (!state.settings.has(maskId)) state.settings.set(maskId, { ...DEFAULT_SETTING });
    return state.settings.get(maskId);
  }

  function clearFrame(message) {
    state.frame = null;
    state.src = null;
    state.layers = [];
    canvas.width = 1;
    canvas.height = 1;
    $("frame-id").textContent = "";
    $("frame-meta").replaceChildren();
    $("mask-rows").replaceChildren();
    $("legend").replaceChildren();
    roiLayer.replaceChildren();
    showViewError(message);
  }

  function showViewError(message) {
    $("view-error").textContent = message || "";
    $("view-error").hidden = !message;
  }

  async function openFrame(frameId, index) {
    const generation = ++state.generation;
    canvas.dataset.state = "loading";
    let frame;
    try {
      frame = await frameDict(frameId);
    } catch (error) {
      if (generation === state.generation) clearFrame(error.message);
      return;
    }
    if (generation !== state.generation) return;
    state.frame = frame;
    state.index = index;
    $("frame-id").textContent = frame.id;
    $("position").textContent = index >= 0 ? `${index + 1} / ${state.count}` : "(not in the selection)";
    const sources = frame.sources || [];
    if (!sources.some((s) => s.id === state.sourceId)) {
      state.sourceId = (sources.find((s) => (s.masks || []).length) || sources[0] || {}).id ?? null;
    }
    $("source-select").replaceChildren(...sources.map((s) => new Option(s.id, s.id, false, s.id === state.sourceId)));
    renderDetails(frame);
    renderList(index >= 0 ? Math.floor(index / PAGE) * PAGE : state.listOffset);
    updateLink();
    await showSource(generation);
    if (generation === state.generation && index >= 0 && index + 1 < state.count) prefetch(index + 1);
  }

  function sourceOf(frame, sourceId) {
    return (frame.sources || []).find((s) => s.id === sourceId);
  }

  function pixelQueries(frame, source, mask, kind) {
    return { frame: frame.id, source: source.id, ...(mask ? { mask: mask.id } : {}), kind };
  }

  function maskPlanes(frame, source) {
    // what drawing the source needs: label planes, and alpha planes of masks shown in alpha mode
    return (source.masks || []).map((mask) => {
      const layer = { id: mask.id, uri: mask.uri, labels: null, alpha: null, present: null, error: null };
      const labels = pixels(pixelQueries(frame, source, mask, "labels")).then((p) => { layer.labels = p; });
      const alpha = () => pixels(pixelQueries(frame, source, mask, "alpha")).then((p) => { layer.alpha = p; });
      const wanted = [labels];
      if (settingOf(mask.id).mode === "alpha") wanted.push(alpha());
      else labels.then(alpha).catch(() => {});  // after what is drawn now: a switch to alpha is then instant
      return [layer, Promise.all(wanted).catch((error) => { layer.error = error.message; })];
    });
  }

  async function showSource(generation) {
    const frame = state.frame, source = sourceOf(frame, state.sourceId);
    if (!source) { clearFrame(`frame ${frame.id} has no source`); return; }
    const planes = maskPlanes(frame, source);
    let src;
    try {
      src = await pixels(pixelQueries(frame, source, null, "source"));
    } catch (error) {
      if (generation !== state.generation) return;
      state.src = null;
      state.layers = planes.map(([layer]) => layer);
      canvas.width = 1; canvas.height = 1;
      showViewError(error.message);
      renderMaskRows(); renderLegend(); drawRois();
      canvas.dataset.state = "error";
      return;
    }
    await Promise.all(planes.map(([, done]) => done));
    if (generation !== state.generation) return;
    showViewError("");
    state.src = src;
    state.layers = planes.map(([layer]) => layer);
    if (canvas.width !== src.width || canvas.height !== src.height) {
      canvas.width = src.width;
      canvas.height = src.height;
      state.view.fitted = true;
    }
    state.image = new ImageData(src.width, src.height);
    roiLayer.setAttribute("width", src.width);
    roiLayer.setAttribute("height", src.height);
    roiLayer.setAttribute("viewBox", `0 0 ${src.width} ${src.height}`);
    renderMaskRows();
    draw();
    renderLegend();
    drawRois();
    if (state.view.fitted) fit(); else applyView();
    canvas.dataset.state = "ready";
    document.body.dataset.shown = `${frame.id}\n${source.id}`;
  }

  async function prefetch(index) {
    try {
      const frame = await frameDict(await idAt(index));
      const source = sourceOf(frame, state.sourceId) || (frame.sources || [])[0];
      if (!source) return;
      pixels(pixelQueries(frame, source, null, "source")).catch(() => {});
      maskPlanes(frame, source);
    } catch (_error) { /* the frame is opened, and any error shown, when the user steps there */ }
  }

  // ------------------------------------------------------------------------------------------ panels

  function element(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    node.append(...children);
    return node;
  }

  function renderMaskRows() {
    $("mask-rows").replaceChildren(...state.layers.map((layer) => {
      const setting = settingOf(layer.id);
      const visible = element("input", { type: "checkbox", checked: setting.visible, "data-testid": "mask-visible",
                                         title: "visible" });
      const mode = element("select", { "data-testid": "mask-mode" },
                           new Option("segmentation", "segmentation"), new Option("alpha", "alpha"));
      mode.value = setting.mode;
      const opacity = element("input", { type: "range", min: 0, max: 100, step: 1, value: setting.opacity,
                                         "data-testid": "mask-opacity", title: "opacity %" });
      const shown = element("span", { textContent: `${setting.opacity}%` });
      const tint = element("input", { type: "color", value: setting.tint, "data-testid": "mask-tint",
                                      title: "alpha mode: colour of the transparent part" });
      visible.addEventListener("change", () => { setting.visible = visible.checked; draw(); renderLegend(); });
      mode.addEventListener("change", () => changeMode(layer, setting, mode.value));
      opacity.addEventListener("input", () => {
        setting.opacity = Number(opacity.value);
        shown.textContent = `${setting.opacity}%`;
        draw();
      });
      tint.addEventListener("input", () => { setting.tint = tint.value; draw(); });
      const row = element("div", { className: "mask-row", "data-testid": "mask-row", "data-mask-id": layer.id },
                          visible, element("span", { className: "name", textContent: layer.id, title: layer.uri }),
                          mode, opacity, shown, tint);
      if (layer.error) row.append(element("div", { className: "err", textContent: layer.error }));
      return row;
    }));
  }

  async function changeMode(layer, setting, mode) {
    setting.mode = mode;
    if (mode === "alpha" && !layer.alpha && !layer.error) {
      canvas.dataset.state = "loading";
      const generation = state.generation;
      try {
        layer.alpha = await pixels(pixelQueries(state.frame, sourceOf(state.frame, state.sourceId), layer, "alpha"));
      } catch (error) {
        layer.error = error.message;
        renderMaskRows();
      }
      if (generation !== state.generation) return;
      canvas.dataset.state = "ready";
    }
    draw();
    renderLegend();
  }

  function presentLabels(layer) {
    if (!layer.present) {
      const present = new Uint8Array(state.info.labels.length + 1);
      const data = layer.labels.data;
      for (let i = 0; i < data.length; i++) present[data[i]] = 1;
      layer.present = present;
    }
    return layer.present;
  }

  function renderLegend() {
    // labels present in the masks shown in segmentation mode, in the version's table order
    const shown = new Set();
    for (const layer of state.layers) {
      const setting = settingOf(layer.id);
      if (!setting.visible || setting.mode !== "segmentation" || !layer.labels) continue;
      presentLabels(layer).forEach((flag, k) => { if (flag && k > 0) shown.add(k); });
    }
    const colors = labelColors();
    $("legend").replaceChildren(...state.info.labels.map((label, k) => [label, k + 1])
      .filter(([, index]) => shown.has(index))
      .map(([label, index]) => {
        const picker = element("input", { type: "color", value: rgbToHex(colors[index]), title: `colour of ${label.name}` });
        picker.addEventListener("input", () => changeColor(label.name, picker.value, false));
        picker.addEventListener("change", () => changeColor(label.name, picker.value, true));
        return element("li", { "data-testid": "legend-item", "data-label": label.name }, picker,
                       element("span", { textContent: label.name }));
      }));
  }

  let saveTimer = null;
  function changeColor(name, hex, now) {
    state.pageColors[name] = hexToRgb(hex);
    draw();
    clearTimeout(saveTimer);
    saveTimer = setTimeout(() => saveColor(name, hex), now ? 0 : 400);
  }

  async function saveColor(name, hex) {
    const status = $("color-status");
    if (!state.info.writable) {
      status.textContent = pageOnlyNote();
      return;
    }
    status.textContent = `saving ${name}…`;
    const response = await fetch("/api/colors", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Maskstore-Token": token },
      body: JSON.stringify({ colors: { [name]: hex } }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      status.textContent = `not saved (${body.error || response.statusText}); the colour is kept for this page only`;
      return;
    }
    state.info = body;
    if (rgbToHex(state.pageColors[name] || []) === hex) delete state.pageColors[name];
    status.textContent = `saved ${name} = ${hex} to ${body.dataset}/${body.version} label_colors`;
    status.dataset.saved = `${name}=${hex}`;
  }

  function pageOnlyNote() {
    return state.info.state === "published"
      ? "published version: colour changes are kept for this page only"
      : "read-only viewer: colour changes are kept for this page only";
  }

  function renderDetails(frame) {
    const rows = [["id", frame.id], ["context id", frame.context_id], ["timestamp", String(frame.timestamp)]];
    for (const source of frame.sources || []) {
      const size = source.width && source.height ? ` (${source.width}×${source.height})` : "";
      rows.push([`source ${source.id}`, `${source.uri}${size}`]);
      for (const mask of source.masks || []) rows.push([`  mask ${mask.id}`, mask.uri]);
    }
    const frameLabels = (frame.rois || []).filter((r) => !(r.poly || []).length).flatMap((r) => r.label || []);
    if (frameLabels.length) rows.push(["frame labels", frameLabels.join(", ")]);
    const table = element("table", {}, ...rows.map(([key, value]) =>
      element("tr", {}, element("th", { textContent: key }), element("td", { textContent: value }))));
    const meta = element("pre", { textContent: JSON.stringify(frame.meta || {}, null, 2) });
    $("frame-meta").replaceChildren(table, element("div", { className: "note", textContent: "meta" }), meta);
  }

  function drawRois() {
    const frame = state.frame;
    const minimum = Number($("roi-min-confidence").value) || 0;
    const svg = "http://www.w3.org/2000/svg";
    const shapes = [], items = [];
    for (const roi of (frame && frame.rois) || []) {
      const poly = roi.poly || [];
      const onSource = !(roi.sources || []).length || roi.sources.includes(state.sourceId);
      const confident = roi.confidence == null || roi.confidence >= minimum;
      if (poly.length < 4 || !onSource || !confident) continue;
      const text = (roi.label || []).join(", ") + (roi.confidence == null ? "" : ` ${Number(roi.confidence).toFixed(2)}`);
      const polygon = document.createElementNS(svg, "polygon");
      const points = [];
      for (let i = 0; i + 1 < poly.length; i += 2) points.push(`${poly[i]},${poly[i + 1]}`);
      polygon.setAttribute("points", points.join(" "));
      polygon.setAttribute("data-testid", "roi");
      const caption = document.createElementNS(svg, "text");
      caption.setAttribute("x", poly[0]);
      caption.setAttribute("y", poly[1]);
      caption.setAttribute("dy", "-0.3em");
      caption.textContent = text;
      shapes.push(polygon, caption);
      items.push(element("li", { "data-testid": "roi-item", textContent: text }));
    }
    roiLayer.replaceChildren(...shapes);
    $("roi-list").replaceChildren(...items);
  }

  function updateLink() {
    const link = new URLSearchParams();
    if (state.query) link.set("q", state.query);
    if (state.frame) link.set("frame", state.frame.id);
    if (state.sourceId) link.set("source", state.sourceId);
    $("deep-link").href = `?${link}`;
    if (token) link.set("token", token);  // the address bar keeps the token so colour saving works
    history.replaceState(null, "", `?${link}`);
  }

  // ------------------------------------------------------------------------------------------ zoom, pan

  function applyView() {
    const { scale, x, y } = state.view;
    stage.style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
    roiLayer.style.setProperty("--zoom", scale);
    canvas.style.imageRendering = scale >= 1 ? "pixelated" : "auto";
    $("zoom-level").textContent = `${Math.round(scale * 100)}%`;
  }

  function fit() {
    const width = viewport.clientWidth, height = viewport.clientHeight;
    const scale = Math.min(width / canvas.width, height / canvas.height) || 1;
    state.view = { scale, x: (width - canvas.width * scale) / 2, y: (height - canvas.height * scale) / 2, fitted: true };
    applyView();
  }

  function oneToOne() {
    const width = viewport.clientWidth, height = viewport.clientHeight;
    state.view = { scale: 1, x: (width - canvas.width) / 2, y: (height - canvas.height) / 2, fitted: false };
    applyView();
  }

  function zoomAt(factor, px, py) {
    const view = state.view;
    const scale = Math.min(Math.max(view.scale * factor, 0.02), 64);
    state.view = { scale, x: px - (px - view.x) * scale / view.scale, y: py - (py - view.y) * scale / view.scale,
                   fitted: false };
    applyView();
  }

  function bindZoomPan() {
    viewport.addEventListener("wheel", (event) => {
      event.preventDefault();
      const rect = viewport.getBoundingClientRect();
      zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX - rect.left, event.clientY - rect.top);
    }, { passive: false });
    let drag = null;
    viewport.addEventListener("pointerdown", (event) => {
      drag = { x: event.clientX, y: event.clientY };
      viewport.setPointerCapture(event.pointerId);
      viewport.classList.add("dragging");
    });
    viewport.addEventListener("pointermove", (event) => {
      if (!drag) return;
      state.view.x += event.clientX - drag.x;
      state.view.y += event.clientY - drag.y;
      state.view.fitted = false;
      drag = { x: event.clientX, y: event.clientY };
      applyView();
    });
    const stop = () => { drag = null; viewport.classList.remove("dragging"); };
    viewport.addEventListener("pointerup", stop);
    viewport.addEventListener("pointercancel", stop);
    $("zoom-fit").addEventListener("click", fit);
    $("zoom-1").addEventListener("click", oneToOne);
    window.addEventListener("resize", () => { if (state.view.fitted) fit(); });
  }

  // ------------------------------------------------------------------------------------------ start

  function typing(target) {
    if (target instanceof HTMLSelectElement || target instanceof HTMLTextAreaElement) return true;
    return target instanceof HTMLInputElement && !["checkbox", "color", "button"].includes(target.type);
  }

  function bindNavigation() {
    $("query-form").addEventListener("submit", (event) => {
      event.preventDefault();
      $("query-input").blur();  // arrow keys step through the new selection at once
      applyQuery($("query-input").value, null);
    });
    $("next-frame").addEventListener("click", () => step(1));
    $("prev-frame").addEventListener("click", () => step(-1));
    $("next-10").addEventListener("click", () => step(10));
    $("prev-10").addEventListener("click", () => step(-10));
    $("page-next").addEventListener("click", () => {
      if (state.listOffset + PAGE < state.count) renderList(state.listOffset + PAGE);
    });
    $("page-prev").addEventListener("click", () => renderList(Math.max(state.listOffset - PAGE, 0)));
    $("source-select").addEventListener("change", () => {
      state.sourceId = $("source-select").value;
      updateLink();
      const generation = ++state.generation;
      canvas.dataset.state = "loading";
      showSource(generation);
    });
    $("roi-min-confidence").addEventListener("input", drawRois);
    document.addEventListener("keydown", (event) => {
      if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
      const big = event.shiftKey ? 10 : 1;
      const moves = { ArrowRight: big, ArrowDown: big, ArrowLeft: -big, ArrowUp: -big, PageDown: 10, PageUp: -10 };
      if (event.key in moves) { event.preventDefault(); step(moves[event.key]); }
      else if (event.key === "Home") goTo(0);
      else if (event.key === "End") goTo(state.count - 1);
      else if (event.key === "f") fit();
      else if (event.key === "1") oneToOne();
    });
  }

  async function start() {
    bindNavigation();
    bindZoomPan();
    try {
      state.info = await getJSON("/api/version", {});
    } catch (error) {
      showViewError(error.message);
      return;
    }
    $("version-name").textContent = `${state.info.dataset}/${state.info.version}` +
      (state.info.state === "published" ? " (published)" : "");
    if (!state.info.writable) $("color-status").textContent = pageOnlyNote();
    $("query-input").value = state.query;
    await applyQuery(state.query, params.get("frame"));
  }

  start();
})();
