// phenoprint's plate viewer: plain JavaScript on the service's own API (no framework, no build step, no CDN).
"use strict";

// Confidence (the assignment's margin over the best other candidate) → colour bins, low to high (viridis).
const CONFIDENCE_BINS = [
  { below: 0, colour: "#d01c8b", label: "overruled (< 0)" },
  { below: 0.05, colour: "#440154", label: "0 – 0.05" },
  { below: 0.1, colour: "#3b528b", label: "0.05 – 0.1" },
  { below: 0.2, colour: "#21918c", label: "0.1 – 0.2" },
  { below: 0.4, colour: "#5ec962", label: "0.2 – 0.4" },
  { below: Infinity, colour: "#fde725", label: "≥ 0.4" },
];
const TRUTH_COLOURS = { right: "#1a9850", wrong: "#d73027", unlabelled: "#ffffff" };
const EMPTY_COLOUR = "#d9d9d9";
const CONTROL_GLYPHS = { positive_control: "+", negative_control: "−" };
const KEY_STORAGE = "phenoprint.apiKey";

const view = document.getElementById("view");
const tooltip = document.getElementById("tooltip");
let colourBy = "confidence";

// ---- the API, with the key asked for once -------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function detailText(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  return `HTTP ${status}`;
}

let keyPrompt = null;
function askForKey(reason) {
  if (keyPrompt) return keyPrompt;
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-reason").textContent = `${reason}. Enter the service's API key (sent as X-API-Key).`;
  input.value = "";
  keyPrompt = new Promise((resolve) => {
    const form = document.getElementById("key-form");
    const done = (event) => {
      event.preventDefault();
      form.removeEventListener("submit", done);
      sessionStorage.setItem(KEY_STORAGE, input.value);
      dialog.close();
      keyPrompt = null;
      document.getElementById("key-button").hidden = false;
      resolve();
    };
    form.addEventListener("submit", done);
  });
  dialog.showModal();
  input.focus();
  return keyPrompt;
}

async function api(path, options = {}, retried = false) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.set("X-API-Key", key);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && !retried) {
    const body = await response.json().catch(() => null);
    await askForKey(detailText(body, 401));
    return api(path, options, true);
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new ApiError(response.status, detailText(body, response.status));
  }
  return response;
}
const getJson = async (path) => (await api(path)).json();

// ---- small DOM helpers ----------------------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "style") node.style.cssText = value; // CSSOM, which the page's style-src 'self' allows
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
const sirnaLabel = (id, name) => (name ? `${name} (${id})` : `siRNA ${id}`);
function showError(where, error) {
  where.replaceChildren(el("p", { class: "error", role: "alert", text: error.message || String(error) }));
}

function confidenceBin(confidence) {
  const c = confidence === null || confidence === undefined ? -Infinity : confidence;
  return CONFIDENCE_BINS.findIndex((bin) => c < bin.below);
}
function wellColour(well) {
  if (colourBy === "truth") {
    if (well.correct === null) return TRUTH_COLOURS.unlabelled;
    return well.correct ? TRUTH_COLOURS.right : TRUTH_COLOURS.wrong;
  }
  return CONFIDENCE_BINS[confidenceBin(well.confidence)].colour;
}

// ---- experiments page ---------------------------------------------------------------------------------------
async function showExperiments() {
  view.replaceChildren(el("h1", { text: "Experiments" }), el("p", { class: "muted", text: "Loading…" }));
  const list = await getJson("/experiments");
  const rows = list.experiments.map((e) =>
    el(
      "tr",
      { "data-experiment": e.experiment },
      el("td", {}, el("a", { href: `#/experiment/${encodeURIComponent(e.experiment)}`, text: e.experiment })),
      el("td", { text: e.cell_type }),
      el("td", { class: "num", text: e.entries }),
      el("td", { class: "num", text: e.sirnas }),
      el("td", { class: "num", text: e.controls }),
      el("td", { text: `${e.centering}${e.per_plate ? " per plate" : ""}` }),
      el("td", { text: e.mode }),
      el("td", {}, e.selected ? autoDetails(e) : el("span", { class: "muted", text: "given" })),
      el("td", { class: "mono", title: e.fingerprint || "", text: (e.fingerprint || "–").slice(0, 12) }),
      el("td", { text: e.created || "–" }),
      el(
        "td",
        { class: "predictions" },
        e.predicted_wells === null
          ? el("span", { class: "muted", text: "none" })
          : el("a", { href: `#/experiment/${encodeURIComponent(e.experiment)}`, text: `${e.predicted_wells} wells` }),
      ),
    ),
  );
  const refused = Object.entries(list.refused || {}).concat(Object.entries(list.refused_predictions || {}));
  view.replaceChildren(
    el("h1", { text: "Experiments" }),
    el(
      "p",
      { class: "muted" },
      `${list.experiments.length} indexes served. Open one for its plate maps (predictions written by `,
      el("code", { text: "phenoprint predict" }),
      "), or classify a well by hand.",
    ),
    el(
      "table",
      { class: "data", id: "experiments" },
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          ["experiment", "cell type", "entries", "siRNAs", "controls", "centering", "mode", "auto", "model", "created", "predictions"].map(
            (h) => el("th", { scope: "col", text: h }),
          ),
        ),
      ),
      el("tbody", {}, rows),
    ),
    refused.length
      ? el("div", {}, el("h2", { text: "Not served" }), el("ul", {}, refused.map(([n, why]) => el("li", {}, el("b", { text: n }), `: ${why}`))))
      : "",
  );
}

function autoDetails(e) {
  const details = el("details", {}, el("summary", { text: "auto" }), el("p", { text: e.selected }));
  details.addEventListener(
    "toggle",
    async () => {
      if (!details.open || details.dataset.loaded) return;
      details.dataset.loaded = "1";
      try {
        const detail = await getJson(`/experiments/${encodeURIComponent(e.experiment)}`);
        const table = (detail.manifest.selection || {}).table || [];
        if (!table.length) return;
        const cols = Object.keys(table[0]);
        details.append(
          el(
            "table",
            { class: "data" },
            el("thead", {}, el("tr", {}, cols.map((c) => el("th", { text: c })))),
            el("tbody", {}, table.map((r) => el("tr", {}, cols.map((c) => el("td", { text: typeof r[c] === "number" ? fmt(r[c]) : String(r[c]) }))))),
          ),
        );
      } catch (error) {
        details.append(el("p", { class: "error", text: error.message }));
      }
    },
  );
  return details;
}

// ---- plate page -----------------------------------------------------------------------------------------------
async function showPlates(experiment, selected) {
  view.replaceChildren(el("h1", { text: experiment }), el("p", { class: "muted", text: "Loading predictions…" }));
  let data;
  try {
    data = await getJson(`/experiments/${encodeURIComponent(experiment)}/predictions`);
  } catch (error) {
    view.replaceChildren(el("h1", { text: experiment }), el("p", { class: "error", role: "alert", text: error.message }));
    return;
  }
  if (!data.labelled && colourBy === "truth") colourBy = "confidence";
  const panel = el("aside", { class: "panel", id: "detail", hidden: true, "aria-label": "well detail" });
  const plates = el("div", { class: "plates" }, data.plates.map((p) => plateGrid(data, p, panel)));
  const toggle = el(
    "label",
    { title: data.labelled ? "" : "the predicted table carries no labels" },
    el("input", {
      type: "checkbox",
      id: "colour-truth",
      checked: colourBy === "truth",
      disabled: !data.labelled,
      onchange: (event) => {
        colourBy = event.target.checked ? "truth" : "confidence";
        recolour(data);
      },
    }),
    " colour by right / wrong",
  );
  view.replaceChildren(
    el("h1", {}, el("a", { href: "#/", text: "Experiments" }), " / ", experiment),
    el(
      "p",
      { class: "muted" },
      `${data.wells.length} wells on ${data.plates.length} plates from ${data.source} (read ${data.loaded_at}); `,
      `open-set threshold ${fmt(data.open_set_threshold)}. Hover a well for its top-3; click it (or Enter) for its detail.`,
    ),
    el("div", { class: "toolbar" }, legend(data), toggle),
    el("div", { class: "plate-layout" }, plates, panel),
  );
  recolour(data);
  if (selected) {
    const button = view.querySelector(`.well[data-plate="${selected.plate}"][data-well="${selected.well}"]`);
    if (button) button.click();
  }
}

function legend(data) {
  const swatch = (colour, glyph = "", extra = "") =>
    el("span", { class: `well ${extra}`, style: `background:${colour}`, "aria-hidden": "true" }, glyph ? el("span", { class: "glyph", text: glyph }) : null);
  const confidence = CONFIDENCE_BINS.map((bin, i) => el("span", { class: "item", "data-bin": i }, swatch(bin.colour), bin.label));
  const truth = data.labelled
    ? [el("span", { class: "item" }, swatch(TRUTH_COLOURS.right), "right"), el("span", { class: "item" }, swatch(TRUTH_COLOURS.wrong), "wrong"), el("span", { class: "item" }, swatch(TRUTH_COLOURS.unlabelled), "unlabelled")]
    : [];
  return el(
    "div",
    { class: "legend", id: "legend", "aria-label": "legend" },
    el("b", { text: "confidence:" }),
    confidence,
    truth.length ? el("b", { text: "labels:" }) : null,
    truth,
    el("span", { class: "item" }, swatch("#888", "?", "unknown"), "unknown (open set)"),
    el("span", { class: "item" }, swatch("#888", "+", "control"), "positive control"),
    el("span", { class: "item" }, swatch("#888", "−", "control"), "negative control"),
    el("span", { class: "item" }, swatch(EMPTY_COLOUR, "", "empty"), "no prediction"),
  );
}

function plateGrid(data, plate, panel) {
  const byPosition = new Map(data.wells.filter((w) => w.plate === plate.plate).map((w) => [`${w.row},${w.column}`, w]));
  const grid = el("div", {
    class: "grid",
    role: "grid",
    "aria-label": `plate ${plate.plate}`,
    style: `grid-template-columns: 18px repeat(${data.columns}, var(--well))`,
  });
  grid.append(el("span", { class: "label" }));
  for (let c = 0; c < data.columns; c++) grid.append(el("span", { class: "label", text: String(c + 1).padStart(2, "0") }));
  for (let r = 0; r < data.rows; r++) {
    grid.append(el("span", { class: "label", text: data.row_names[r] }));
    for (let c = 0; c < data.columns; c++) {
      const name = `${data.row_names[r]}${String(c + 1).padStart(2, "0")}`;
      const well = byPosition.get(`${r},${c}`);
      if (!well) {
        grid.append(el("span", { class: "well empty", "data-well": name, "data-plate": plate.plate, "aria-hidden": "true" }));
        continue;
      }
      const glyph = well.unknown ? "?" : CONTROL_GLYPHS[well.well_type] || "";
      const classes = ["well", "predicted", well.unknown ? "unknown" : "", well.well_type ? "control" : ""].filter(Boolean).join(" ");
      const button = el(
        "button",
        {
          type: "button",
          class: classes,
          "data-well": well.well,
          "data-plate": well.plate,
          "data-bin": confidenceBin(well.confidence),
          "data-control": well.well_type,
          "aria-label": `well ${well.well}: ${sirnaLabel(well.sirna_id, well.sirna)}, confidence ${fmt(well.confidence)}${well.unknown ? ", unknown" : ""}${well.well_type ? `, ${well.well_type.replace("_", " ")}` : ""}`,
          onclick: () => openDetail(data, well, panel, button),
          onmouseenter: (event) => showTooltip(well, event.currentTarget),
          onmouseleave: hideTooltip,
          onfocus: (event) => showTooltip(well, event.currentTarget),
          onblur: hideTooltip,
        },
        glyph ? el("span", { class: "glyph", text: glyph }) : null,
      );
      button.wellData = well;
      grid.append(button);
    }
  }
  const margin = plate.group_margin === null ? "–" : fmt(plate.group_margin);
  const accuracy = plate.labelled ? `, ${plate.correct}/${plate.labelled} labelled right` : "";
  return el(
    "section",
    { class: "plate", "data-plate": plate.plate, "aria-label": `plate ${plate.plate}` },
    el("h2", { text: `Plate ${plate.plate}` }),
    el(
      "div",
      { class: "meta" },
      `group ${plate.group === null ? "none (no plate design)" : plate.group}, margin ${margin}; ${plate.wells} wells, ${plate.unknown} unknown${accuracy}`,
    ),
    grid,
  );
}

function recolour() {
  for (const button of view.querySelectorAll(".well.predicted")) button.style.background = wellColour(button.wellData);
}

function showTooltip(well, target) {
  const rows = well.top_k.slice(0, 3).map((c, i) => el("tr", {}, el("td", { text: `${i + 1}.` }), el("td", { text: sirnaLabel(c.sirna_id, c.sirna) }), el("td", { text: fmt(c.score) })));
  tooltip.replaceChildren(
    el("div", {}, el("b", { text: `${well.well}` }), ` → ${sirnaLabel(well.sirna_id, well.sirna)}${well.unknown ? " (unknown)" : ""}`),
    el("table", { class: "top3" }, rows),
  );
  tooltip.hidden = false;
  const box = target.getBoundingClientRect();
  const left = Math.min(box.right + 8, window.innerWidth - 330);
  tooltip.style.left = `${left}px`;
  tooltip.style.top = `${Math.min(box.top, window.innerHeight - 120)}px`;
}
function hideTooltip() {
  tooltip.hidden = true;
}

async function openDetail(data, well, panel, button) {
  for (const b of view.querySelectorAll(".well.selected")) b.classList.remove("selected");
  button.classList.add("selected");
  history.replaceState(null, "", `#/experiment/${encodeURIComponent(data.experiment)}/plate/${well.plate}/well/${well.well}`);
  const open = well.unknown ? el("span", { class: "flag yes", text: "unknown" }) : el("span", { class: "flag no", text: "known" });
  const truth =
    well.correct === null
      ? el("span", { class: "muted", text: "no label" })
      : el("span", { class: `flag ${well.correct ? "right" : "wrong"}`, text: `${well.correct ? "right" : "wrong"} (label ${well.true_sirna_id})` });
  const others = el("div", { id: "locations" }, el("p", { class: "muted", text: "Looking up its other wells…" }));
  const composites = el("div", { class: "composites", id: "composites" });
  panel.hidden = false;
  panel.replaceChildren(
    el("button", { type: "button", class: "close link", text: "close", onclick: () => closeDetail(panel, button) }),
    el("h2", { id: "detail-title", text: `Plate ${well.plate}, well ${well.well}` }),
    el("p", {}, "Assigned ", el("b", { id: "detail-assigned", text: sirnaLabel(well.sirna_id, well.sirna) }), ` — score ${fmt(well.score)}, confidence ${fmt(well.confidence)}, ${well.assigned ? "placed by the plate assignment" : "per-well fallback"}`),
    el("p", {}, "Open set: ", open, ` similarity ${fmt(well.similarity)} (threshold ${fmt(data.open_set_threshold)})`),
    el("p", {}, well.well_type ? `${well.well_type.replace("_", " ")} · ` : "", truth),
    el("h3", { text: `Its own top-${well.top_k.length}` }),
    el(
      "table",
      { class: "data", id: "detail-topk" },
      el("thead", {}, el("tr", {}, el("th", { text: "#" }), el("th", { text: "siRNA" }), el("th", { class: "num", text: "score" }))),
      el("tbody", {}, well.top_k.map((c, i) => el("tr", { "data-sirna": c.sirna_id }, el("td", { text: i + 1 }), el("td", { text: sirnaLabel(c.sirna_id, c.sirna) }), el("td", { class: "num", text: fmt(c.score, 4) })))),
    ),
    el("h3", { text: "Other wells of this siRNA" }),
    others,
    el("h3", { text: "Images" }),
    composites,
  );
  panel.focus?.();
  loadLocations(data.experiment, well, others);
  loadComposites(data.experiment, well, composites);
}

function closeDetail(panel, button) {
  panel.hidden = true;
  button.classList.remove("selected");
  button.focus();
}

async function loadLocations(experiment, well, where) {
  try {
    const info = await getJson(`/sirnas/${well.sirna_id}?experiment=${encodeURIComponent(experiment)}&k=5`);
    const here = info.locations.filter((l) => l.experiment === experiment && !(l.plate === well.plate && l.well === well.well));
    const elsewhere = info.locations.length - here.length;
    where.replaceChildren(
      el("p", {}, `${info.kind || ""} · ${info.locations.length} indexed wells in the served experiments`),
      here.length
        ? el("ul", {}, here.slice(0, 20).map((l) => el("li", { text: `${l.experiment} plate ${l.plate} ${l.well}` })))
        : el("p", { class: "muted", text: `none in ${experiment}'s own indexed wells; ${elsewhere} in the reference experiments` }),
    );
  } catch (error) {
    where.replaceChildren(el("p", { class: "muted", text: error.message }));
  }
}

async function loadComposites(experiment, well, where) {
  const figures = [];
  for (const site of [1, 2]) {
    try {
      const response = await api(`/experiments/${encodeURIComponent(experiment)}/plates/${well.plate}/wells/${well.well}/composite?site=${site}`);
      const url = URL.createObjectURL(await response.blob());
      figures.push(el("figure", {}, el("img", { src: url, alt: `${well.well} site ${site} composite` }), el("figcaption", { text: `site ${site}` })));
    } catch (error) {
      if (site === 1) figures.push(el("p", { class: "muted", text: error.message }));
      break;
    }
  }
  where.replaceChildren(...figures);
}

// ---- classify a well by hand --------------------------------------------------------------------------------
async function showClassify() {
  const experiments = await getJson("/experiments");
  const select = el("select", { id: "classify-experiment", required: true }, experiments.experiments.map((e) => el("option", { value: e.experiment, text: e.experiment })));
  const plate = el("input", { id: "classify-plate", type: "number", min: 1, placeholder: "e.g. 1" });
  const input = el("input", { id: "classify-files", type: "file", multiple: true, accept: "image/png" });
  const answer = el("div", { id: "classify-answer" }, el("p", { class: "muted", text: "The answer of POST /classify appears here." }));
  const preview = el("div", { id: "classify-preview" }, el("p", { class: "muted", text: "The composite of POST /preview appears here." }));
  const zone = el(
    "div",
    { class: "dropzone", id: "dropzone", tabindex: 0, role: "button", "aria-label": "drop a well's PNG files here, or press Enter to choose them" },
    el("p", {}, el("b", { text: "Drop a well's channel PNGs here" })),
    el("p", { class: "muted", text: "6 per site (…_s1_w1.png … _s1_w6.png), 1 or 2 sites; or press Enter to choose files." }),
  );
  const run = (files) => classifyFiles([...files], select.value, plate.value, answer, preview);
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    run(event.dataTransfer.files);
  });
  input.addEventListener("change", () => run(input.files));
  view.replaceChildren(
    el("h1", { text: "Classify a well by hand" }),
    el("div", { class: "form-row" }, el("label", {}, "experiment", select), el("label", {}, "plate (per-plate indexes need it)", plate), el("label", {}, "or choose files", input)),
    zone,
    el("div", { class: "classify" }, el("section", {}, el("h2", { text: "Classification" }), answer), el("section", {}, el("h2", { text: "Composite (site 1)" }), preview)),
  );
}

async function classifyFiles(files, experiment, plate, answer, preview) {
  if (!files.length) return;
  answer.replaceChildren(el("p", { class: "muted", text: `Classifying ${files.length} files…` }));
  preview.replaceChildren();
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  form.append("experiment", experiment);
  if (plate) form.append("plate", plate);
  const siteOne = files.filter((f) => /_s1_w\d\.png$/i.test(f.name));
  const previewForm = new FormData();
  for (const file of siteOne.length ? siteOne : files.slice(0, 6)) previewForm.append("files", file, file.name);
  try {
    const result = await (await api("/classify", { method: "POST", body: form })).json();
    answer.replaceChildren(
      el("p", {}, `${result.well || "well"} of ${result.experiment}, sites ${result.sites.join(", ")}: `, el("b", { id: "classify-top", text: sirnaLabel(result.predictions[0].sirna_id, result.predictions[0].sirna) })),
      el("p", {}, "Open set: ", result.unknown ? el("span", { class: "flag yes", text: "unknown" }) : el("span", { class: "flag no", text: "known" }), ` best similarity ${fmt(result.best_similarity)}; ${result.mode}, ${result.centering}`),
      el(
        "table",
        { class: "data", id: "classify-topk" },
        el("thead", {}, el("tr", {}, el("th", { text: "#" }), el("th", { text: "siRNA" }), el("th", { class: "num", text: "score" }))),
        el("tbody", {}, result.predictions.map((p) => el("tr", { "data-sirna": p.sirna_id }, el("td", { text: p.rank }), el("td", { text: sirnaLabel(p.sirna_id, p.sirna) }), el("td", { class: "num", text: fmt(p.score, 4) })))),
      ),
      el("p", { class: "muted", text: `${fmt(result.timings.total, 0)} ms` }),
    );
  } catch (error) {
    showError(answer, error);
  }
  try {
    const blob = await (await api("/preview", { method: "POST", body: previewForm })).blob();
    preview.replaceChildren(el("img", { id: "classify-image", src: URL.createObjectURL(blob), alt: "RGB composite of site 1", class: "composite" }));
  } catch (error) {
    showError(preview, error);
  }
}

// ---- routing --------------------------------------------------------------------------------------------------
async function route() {
  hideTooltip();
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  try {
    if (parts[0] === "experiment" && parts[1]) {
      const selected = parts[2] === "plate" && parts[4] === "well" ? { plate: Number(parts[3]), well: parts[5] } : null;
      await showPlates(parts[1], selected);
    } else if (parts[0] === "classify") {
      await showClassify();
    } else {
      await showExperiments();
    }
  } catch (error) {
    showError(view, error);
  }
  document.body.dataset.ready = location.hash || "#/";
}

document.getElementById("key-button").addEventListener("click", () => askForKey("Change the key"));
if (sessionStorage.getItem(KEY_STORAGE)) document.getElementById("key-button").hidden = false;
window.addEventListener("hashchange", route);
route();
