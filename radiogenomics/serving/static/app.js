/* The planner page of `radiogenomics serve` (docs/serving.md, "The planner web page").
 *
 * Plain modern JavaScript, no dependencies, no build step, no external fetches. It calls the API of the same
 * server with relative URLs (so it also works behind a reverse proxy under a path prefix) and the planner's
 * bearer token, which it keeps in sessionStorage only. Every value element carries data-field="<record key>"
 * and data-value="<the JSON value>"; numbers are shown with Number.prototype.toFixed(DECIMALS[field]).
 */
"use strict";

const TOKEN_KEY = "radiogenomics.token";

/** Decimals shown per numeric record field (toFixed). Toxicity is shown in percent with TOXICITY_DECIMALS. */
const DECIMALS = Object.freeze({
  rsi: 3, rsi_lower: 3, rsi_upper: 3,
  alpha_per_gy: 3, beta_per_gy2: 3, alpha_beta_gy: 1,
  gard: 1, target_gard: 1, n_fractions: 0, dose_per_fraction_gy: 2,
  dose_for_target_gard_gy: 1, dose_for_target_gard_lower_gy: 1, dose_for_target_gard_upper_gy: 1,
  recommended_total_dose_gy: 1, recommended_n_fractions: 0, recommended_dose_per_fraction_gy: 2,
});
const TOXICITY_DECIMALS = 1;
const MISSING = "\u2014";

/** The adapted record (POST /v1/adaptations/images, docs/adaptive.md): decimals of the course figures
 * ("percent" = a probability shown in percent with 1 decimal), and the response table's columns. */
const ADAPT_DECIMALS = Object.freeze({
  baseline_n_fractions: 0, baseline_dose_per_fraction_gy: 2, baseline_total_dose_gy: 1,
  delivered_n_fractions: 0, delivered_dose_per_fraction_gy: 2, delivered_dose_gy: 1,
  remaining_n_fractions: 0, remaining_dose_per_fraction_gy: 2, remaining_dose_gy: 1,
  adapted_total_dose_gy: 1, tcp_baseline: "percent", tcp_adapted: "percent",
});
const RESPONSE_COLUMNS = Object.freeze([
  ["hypoxic_fraction", "percent"], ["mean_po2_mmhg", 1], ["fmiso_tbr_max", 2], ["suv_max", 2], ["mtv_cc", 1],
  ["gtv_volume_cc", 1],
]);
const ADAPTIVE_FLAGS = Object.freeze(["deescalated", "escalated", "adaptation_fallback"]);

/** Plain-language meaning of each record flag (contract section 2; docs/radiobiology.md, docs/models.md). */
const FLAG_TEXT = Object.freeze({
  out_of_distribution: "This patient's inputs lie outside the range the model was trained on: treat the " +
    "prediction with extra caution.",
  population_fallback: "The patient's own radiosensitivity could not be used, so the training population's " +
    "median RSI and its spread were used instead.",
  missing_genomics: "No measured gene-expression RSI: the RSI was predicted from imaging, with a wider " +
    "uncertainty.",
  missing_imaging: "An imaging modality the model uses was not available for this patient; its features " +
    "were treated as missing.",
  clipped_max: "The dose that reaches the target GARD is above the site's maximum safe dose (or an organ " +
    "limit): the recommendation was lowered to that limit.",
  clipped_min: "The dose that reaches the target GARD is below the site's minimum dose: the recommendation " +
    "was raised to that minimum.",
  unrecognised_structure: "A structure name matched no known organ, so no organ limit was checked for it: " +
    "check the structure names.",
  site_not_in_training: "The model was not trained on this treatment site: the site's population values and " +
    "standard (or the patient's own) regimen are used, not a personalised dose.",
  implausible_parameter: "An LQ parameter lies outside the documented plausible range: for the patient's own " +
    "alpha the population values are used instead; for an end of the RSI interval no dose is given for that end.",
  oar_limited: "A hard organ-at-risk limit (e.g. spinal cord maximum dose) lowered the recommended dose: see " +
    "the organ checks.",
  oar_limit_exceeded: "Even the site's minimum dose breaks a hard organ-at-risk limit on this patient's dose " +
    "distribution: review before planning.",
  oar_soft_limit_exceeded: "A soft organ-at-risk limit (e.g. parotid mean dose) is exceeded at the recommended " +
    "dose: it is reported, not acted on; spare the organ in planning.",
  oar_unchecked: "No dose distribution for (some of) the organs at risk: their limits were not checked here; " +
    "the planning stage checks them.",
  regimen_outside_training: "The dose per fraction lies outside the regimens the toxicity models were trained " +
    "on: the toxicity is an extrapolation.",
  toxicity_unavailable: "A toxicity the model serves could not be computed for this patient (another site, or " +
    "the plan's dose features are missing).",
  deescalated: "Adaptive re-prescription: the mid-treatment imaging lowers the total dose of the course " +
    "(never below the site's minimum).",
  escalated: "Adaptive re-prescription: the mid-treatment imaging raises the total dose of the course " +
    "(never above the site's maximum or a hard organ limit).",
  adaptation_fallback: "The mid-treatment image could not be used (missing, unreadable or without tumour " +
    "uptake): the baseline course continues unchanged.",
});
const NO_SAFE_DOSE = "Both limits apply at once: no dose satisfies every safety rail, so there is no " +
  "recommendation. Review the organ limits and the regimen.";

const STATUS_TEXT = Object.freeze({
  400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
  413: "Payload too large", 415: "Unsupported media type", 422: "Invalid input", 429: "Too many requests",
  500: "Server error", 502: "Bad gateway", 503: "Service unavailable",
});
const STATUS_HINT = Object.freeze({
  401: "check the API token; `radiogenomics token create` makes one",
  413: "the upload is larger than the server accepts",
  415: "the server did not accept this kind of content",
  422: "correct the field named above",
});

const state = { token: "", body: null, record: null };

const $ = (id) => document.getElementById(id);

/* ------------------------------------------------------------------------------------------- the API */

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function errorDetail(payload, text) {
  const detail = payload && typeof payload === "object" && "detail" in payload ? payload.detail : text;
  if (Array.isArray(detail)) {
    return detail.map((d) => (d && typeof d === "object"
      ? `${(d.loc || []).join(".")}${d.loc ? ": " : ""}${d.msg ?? JSON.stringify(d)}` : String(d))).join("; ");
  }
  if (detail && typeof detail === "object") return JSON.stringify(detail);
  return String(detail || "").trim();
}

/** Call the API; the parsed JSON body, or an ApiError whose message names the status and the server's detail. */
async function api(method, path, { json, form } = {}) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, `cannot reach the server (${err.message})`);
  }
  const text = await response.text();
  let payload = null;
  try {
    payload = text ? JSON.parse(text) : null;
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const name = STATUS_TEXT[response.status] || response.statusText || "Error";
    const detail = errorDetail(payload, text);
    const hint = STATUS_HINT[response.status];
    throw new ApiError(response.status,
      `${response.status} ${name}${detail ? `: ${detail}` : ""}${hint ? ` \u2014 ${hint}` : ""}`);
  }
  return payload;
}

/* ---------------------------------------------------------------------------------- messages, status */

function showError(err) {
  const box = $("error");
  box.textContent = err instanceof Error ? err.message : String(err);
  box.dataset.status = err instanceof ApiError ? String(err.status) : "";
  box.hidden = false;
}

function clearError() {
  const box = $("error");
  box.hidden = true;
  box.textContent = "";
  box.dataset.status = "";
}

function setStatus(text) {
  $("status").textContent = text;
}

/** Run an action with the given buttons disabled (then as they were); its errors go to the error box. */
async function busy(buttons, message, action) {
  clearError();
  setStatus(message);
  const before = buttons.map((b) => b.disabled);
  buttons.forEach((b) => { b.disabled = true; });
  try {
    await action();
    setStatus("");
  } catch (err) {
    setStatus("");
    showError(err);
  } finally {
    buttons.forEach((b, i) => { b.disabled = before[i]; });
  }
}

/* ------------------------------------------------------------------------------------ connect, inputs */

async function showServer() {
  try {
    const health = await api("GET", "health");
    $("server").textContent = `server ${health.status}: ${health.model_uri ?? ""}` +
      (health.model_version ? ` (version ${health.model_version})` : "");
  } catch (err) {
    $("server").textContent = `server unreachable: ${err.message}`;
  }
}

async function connect() {
  state.token = $("token").value.trim();
  if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
  else sessionStorage.removeItem(TOKEN_KEY);
  const select = $("patient");
  const upload = $("upload-submit");
  select.disabled = true;
  $("prescribe").disabled = true;
  upload.disabled = true;
  await busy([$("connect")], "connecting\u2026", async () => {
    const [model, listing] = await Promise.all([api("GET", "v1/model"), api("GET", "v1/patients")]);
    $("server").textContent = `model ${model.name ?? ""} version ${model.version ?? ""}` +
      (model.alias ? ` (@${model.alias})` : "");
    select.replaceChildren();
    const ids = listing.patients || [];
    if (ids.length === 0) {
      select.append(new Option("no feature table on the server: upload images", ""));
    } else {
      select.append(...ids.map((id) => new Option(id, id)));
      select.disabled = false;
      $("prescribe").disabled = false;
    }
    upload.disabled = false;
    select.dataset.loaded = String(ids.length);
  });
}

/** The regimen inputs that are filled in, as numbers ({} when all are empty). */
function regimenInputs() {
  const out = {};
  for (const [key, id] of [["n_fractions", "n-fractions"], ["dose_per_fraction_gy", "dose-per-fraction"],
    ["target_gard", "target-gard"]]) {
    const input = $(id);
    const name = input.labels[0].textContent;
    if (input.validity.badInput) throw new Error(`${name}: not a number (use a decimal point, e.g. 2.2)`);
    if (input.value.trim() === "") continue;
    const value = input.valueAsNumber;
    if (!Number.isFinite(value)) throw new Error(`${name}: give a number`);
    out[key] = value;
  }
  return out;
}

/** The body of POST /v1/prescriptions (and /v1/dose-response, /v1/objectives) for one patient. */
function requestBody(patientId, features) {
  const { target_gard: targetGard, ...regimen } = regimenInputs();
  const present = Object.fromEntries(Object.entries(features).filter(([, v]) => v !== null && v !== undefined));
  const body = { patients: [{ patient_id: patientId, features: present }] };
  if (Object.keys(regimen).length > 0) body.regimen = regimen;
  if (targetGard !== undefined) body.target_gard = targetGard;
  return body;
}

/* -------------------------------------------------------------------------------------- prescribing */

async function prescribePatient() {
  const id = $("patient").value;
  if (!id) return;
  await busy([$("prescribe"), $("upload-submit"), $("connect")], `prescribing for ${id}\u2026`, async () => {
    $("result").hidden = true;
    const patient = await api("GET", `v1/patients/${encodeURIComponent(id)}`);
    const body = requestBody(id, patient.features);
    const result = await api("POST", "v1/prescriptions", { json: body });
    showRecord(result.records[0], body);
    await drawDoseResponse(body);
  });
}

async function prescribeUpload() {
  const form = new FormData();
  const patientId = $("upload-patient-id").value.trim();
  const timepoint = $("upload-timepoint").value.trim();
  form.append("patient_id", patientId);
  if (timepoint) form.append("timepoint", timepoint);
  form.append("manifest", $("upload-manifest").value);
  for (const file of $("upload-files").files) form.append("files", file, file.name);
  for (const [field, id] of [["expression", "upload-expression"], ["clinical", "upload-clinical"]]) {
    const text = $(id).value.trim();
    if (text) form.append(field, text);
  }
  const [path, doing] = timepoint ? ["v1/adaptations/images", `re-prescribing ${patientId} at ${timepoint}`]
    : ["v1/prescriptions/images", `uploading and extracting ${patientId}`];
  await busy([$("upload-submit"), $("prescribe")], `${doing}\u2026`, async () => {
    $("result").hidden = true;
    for (const [key, value] of Object.entries(regimenInputs())) form.append(key, String(value));
    const result = await api("POST", path, { form });
    showRecord(result.records[0], null);
    clearPlot(`The ${timepoint ? "adaptation" : "images"} endpoint returns the record only: the dose-response ` +
      "plot and objectives.json are available for patients of the server's feature table.");
  });
}

/* ------------------------------------------------------------------------------------- the record */

function formatNumber(value, decimals) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(decimals) : MISSING;
}

function setField(element, value, text) {
  element.dataset.value = value === null || value === undefined ? "" : String(value);
  element.textContent = text;
}

function endpointLabel(key) {
  return key.replace(/_grade_ge2$/, "").replaceAll("_", " ") + (key.endsWith("_grade_ge2") ? " (grade \u2265 2)" : "");
}

function showRecord(record, body) {
  state.record = record;
  state.body = body;
  clearPlot("");
  for (const element of document.querySelectorAll("#result [data-field]")) {
    const key = element.dataset.field;
    if (key.startsWith("toxicity.")) continue;
    const value = record[key];
    setField(element, value, key in DECIMALS ? formatNumber(value, DECIMALS[key]) : String(value ?? MISSING));
  }
  const rows = Object.entries(record.toxicity || {}).map(([key, p]) => {
    const row = document.createElement("tr");
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = endpointLabel(key);
    const cell = document.createElement("td");
    cell.dataset.field = `toxicity.${key}`;
    setField(cell, p, typeof p === "number" ? `${formatNumber(p * 100, TOXICITY_DECIMALS)} %` : MISSING);
    row.append(name, cell);
    return row;
  });
  if (rows.length === 0) {
    const row = document.createElement("tr");
    const cell = document.createElement("td");
    cell.colSpan = 2;
    cell.textContent = "no toxicity model could predict for this patient (the plan's dose features are missing)";
    row.append(cell);
    rows.push(row);
  }
  $("toxicity").tBodies[0].replaceChildren(...rows);
  showFlags(record.flags || []);
  showAdaptation(record);
  $("download-objectives").disabled = body === null;
  $("result").hidden = false;
}

function showFlags(flags) {
  const list = $("flags");
  const items = flags.map((flag) => {
    const item = document.createElement("li");
    item.className = "flag";
    item.dataset.flag = flag;
    const name = document.createElement("strong");
    name.textContent = flag.replaceAll("_", " ");
    item.append(name, `: ${FLAG_TEXT[flag] || "see docs/radiobiology.md for this flag"}`);
    return item;
  });
  if (flags.includes("clipped_max") && flags.includes("clipped_min")) {
    const item = document.createElement("li");
    item.className = "flag";
    item.dataset.flag = "no_safe_dose";
    item.textContent = NO_SAFE_DOSE;
    items.push(item);
  }
  if (items.length === 0) {
    const item = document.createElement("li");
    item.className = "no-flags";
    item.textContent = "none: the prediction is inside the model's domain and the dose inside the rails";
    items.push(item);
  }
  list.replaceChildren(...items);
  list.closest(".card").classList.toggle("flagged", flags.length > 0);
  document.querySelector(".recommendation").classList.toggle(
    "flagged", flags.includes("clipped_max") || flags.includes("clipped_min"));
}

/* ------------------------------------------------------------------------- baseline vs adapted course */

function formatAdapt(value, decimals) {
  if (decimals === "percent") {
    return typeof value === "number" && Number.isFinite(value) ? `${formatNumber(value * 100, 1)} %` : MISSING;
  }
  return formatNumber(value, decimals);
}

function listItems(texts) {
  return texts.map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    return item;
  });
}

/** The "Baseline vs adapted" section of an adapted record (one with a timepoint); hidden for any other. */
function showAdaptation(record) {
  const section = $("adaptive");
  if (!record.timepoint) {
    section.hidden = true;
    return;
  }
  const delivered = record.delivered_n_fractions > 0 ? record.delivered_dose_gy / record.delivered_n_fractions
    : null;
  const values = {
    baseline_n_fractions: record.recommended_n_fractions,
    baseline_dose_per_fraction_gy: record.recommended_dose_per_fraction_gy,
    baseline_total_dose_gy: record.baseline_total_dose_gy,
    delivered_n_fractions: record.delivered_n_fractions,
    delivered_dose_per_fraction_gy: delivered,
    delivered_dose_gy: record.delivered_dose_gy,
    remaining_n_fractions: record.remaining_n_fractions,
    remaining_dose_per_fraction_gy: record.remaining_dose_per_fraction_gy,
    remaining_dose_gy: record.remaining_n_fractions * record.remaining_dose_per_fraction_gy,
    adapted_total_dose_gy: record.adapted_total_dose_gy,
    tcp_baseline: record.tcp_baseline,
    tcp_adapted: record.tcp_adapted,
  };
  setField(section.querySelector('[data-adapt="timepoint"]'), record.timepoint, record.timepoint);
  for (const [key, decimals] of Object.entries(ADAPT_DECIMALS)) {
    setField(section.querySelector(`[data-adapt="${key}"]`), values[key], formatAdapt(values[key], decimals));
  }

  const response = record.response || {};
  const rows = [["baseline", "Before (planning)"], ["mid_treatment", `Now (${record.timepoint})`]].map(
    ([when, label]) => {
      const row = document.createElement("tr");
      row.dataset.when = when;
      const name = document.createElement("th");
      name.scope = "row";
      name.textContent = label;
      row.append(name);
      const figures = response[when] || {};
      for (const [key, decimals] of RESPONSE_COLUMNS) {
        const cell = document.createElement("td");
        cell.dataset.adapt = `response.${when}.${key}`;
        setField(cell, figures[key], formatAdapt(figures[key], decimals));
        row.append(cell);
      }
      return row;
    });
  $("adaptive-response").tBodies[0].replaceChildren(...rows);

  const flags = (record.flags || []).filter((flag) => ADAPTIVE_FLAGS.includes(flag));
  const items = flags.map((flag) => {
    const item = document.createElement("li");
    item.dataset.flag = flag;
    const name = document.createElement("strong");
    name.textContent = flag.replaceAll("_", " ");
    item.append(name, `: ${FLAG_TEXT[flag]}`);
    return item;
  });
  if (items.length === 0) {
    const item = document.createElement("li");
    item.dataset.flag = "";
    item.textContent = "No change: the mid-treatment imaging keeps the baseline course's total dose.";
    items.push(item);
  }
  $("adaptive-flags").replaceChildren(...items);
  const adaptation = record.adaptation || {};
  $("adaptive-notes").replaceChildren(...listItems([...(response.notes || []), ...(adaptation.notes || [])]));
  section.hidden = false;
}

/* ---------------------------------------------------------------------- the dose-response plot (SVG) */

const SVG_NS = "http://www.w3.org/2000/svg";
const PLOT = Object.freeze({ width: 1100, height: 420, left: 70, right: 330, top: 20, bottom: 58 });
const NTCP_COLOURS = ["#c0392b", "#e67e22", "#8e44ad", "#7f5539", "#d81b60"];

function svgElement(tag, attributes, parent) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (parent) parent.append(element);
  return element;
}

function niceStep(span, target) {
  const raw = span / target;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw) || 10 * power;
}

function clearPlot(message) {
  $("plot").replaceChildren();
  $("plot-caption").textContent = message;
}

async function drawDoseResponse(body) {
  const curve = await api("POST", "v1/dose-response", { json: body });
  renderPlot(curve);
}

/** Draw TCP and NTCP against total dose, the rails and the recommendation (docs/serving.md). */
function renderPlot(curve) {
  const doses = curve.total_dose_gy;
  const x0 = Math.min(...doses);
  const x1 = Math.max(...doses);
  const plotWidth = PLOT.width - PLOT.left - PLOT.right;
  const plotHeight = PLOT.height - PLOT.top - PLOT.bottom;
  const x = (dose) => PLOT.left + ((dose - x0) / (x1 - x0)) * plotWidth;
  const y = (p) => PLOT.top + (1 - p) * plotHeight;
  const root = svgElement("svg", {
    viewBox: `0 0 ${PLOT.width} ${PLOT.height}`, role: "img",
    "aria-labelledby": "plot-title", "data-x0-gy": x0, "data-x1-gy": x1,
  });
  svgElement("title", { id: "plot-title" }, root).textContent =
    `TCP and NTCP of ${curve.patient_id} against total prescription dose`;
  const area = svgElement("rect", {
    class: "plot-area", x: PLOT.left, y: PLOT.top, width: plotWidth, height: plotHeight,
  }, root);
  area.dataset.role = "plot-area";

  const rails = curve.rails || {};
  const railMin = rails.min_total_dose_gy;
  const railMax = rails.max_total_dose_gy;
  const inDomain = (dose) => typeof dose === "number" && Number.isFinite(dose) && dose >= x0 && dose <= x1;
  if (inDomain(railMin)) {
    svgElement("rect", { class: "outside-rails", x: PLOT.left, y: PLOT.top, width: x(railMin) - PLOT.left,
      height: plotHeight }, root);
  }
  if (inDomain(railMax)) {
    svgElement("rect", { class: "outside-rails", x: x(railMax), y: PLOT.top,
      width: PLOT.left + plotWidth - x(railMax), height: plotHeight }, root);
  }

  drawAxes(root, { x, y, x0, x1, plotWidth, plotHeight });

  const series = [{ key: "tcp", label: "TCP", values: curve.tcp, colour: "#1f5fa8", cls: "tcp" }];
  // TCP at the two alpha ends of the record's RSI interval: the band the averaged TCP curve comes from
  if (Array.isArray(curve.tcp_low) && Array.isArray(curve.tcp_high)) {
    series.push({ key: "tcp-low", label: "TCP, resistant end of RSI interval", values: curve.tcp_low,
      colour: "#1f5fa8", cls: "tcp-band" });
    series.push({ key: "tcp-high", label: "TCP, sensitive end of RSI interval", values: curve.tcp_high,
      colour: "#1f5fa8", cls: "tcp-band" });
  }
  Object.entries(curve.ntcp || {}).forEach(([endpoint, values], i) => {
    series.push({ key: "ntcp", endpoint, label: `NTCP ${endpointLabel(endpoint)}`, values,
      colour: NTCP_COLOURS[i % NTCP_COLOURS.length], cls: "ntcp" });
  });
  for (const s of series) {
    const path = svgElement("path", { d: pathData(doses, s.values, x, y), stroke: s.colour, class: `curve ${s.cls}` },
      root);
    path.dataset.series = s.key;
    if (s.endpoint) path.dataset.endpoint = s.endpoint;
  }

  const markers = [
    { key: "rail-min", dose: railMin, label: "min rail", cls: "rail" },
    { key: "rail-max", dose: railMax, label: "max rail", cls: "rail" },
    { key: "target-gard", dose: curve.dose_for_target_gard_gy, label: "dose for target GARD", cls: "gard-dose" },
    { key: "recommended", dose: curve.recommended_total_dose_gy, label: "recommended", cls: "recommended" },
  ];
  for (const m of markers) {
    if (!inDomain(m.dose)) continue;
    const line = svgElement("line", { class: `marker ${m.cls}`, x1: x(m.dose), x2: x(m.dose), y1: PLOT.top,
      y2: PLOT.top + plotHeight }, root);
    line.dataset.marker = m.key;
    line.dataset.doseGy = String(m.dose);
  }
  drawLegend(root, series, markers, x0, x1);
  $("plot").replaceChildren(root);
  $("plot-caption").textContent = `TCP: ${curve.tcp_source || "Poisson LQ"}. NTCP: the toxicity model at each ` +
    "total dose. Shaded: outside the site's safety rails.";
}

function pathData(doses, values, x, y) {
  const parts = [];
  let pen = "M";
  doses.forEach((dose, i) => {
    const p = values[i];
    if (typeof p !== "number" || !Number.isFinite(p)) {
      pen = "M";
      return;
    }
    parts.push(`${pen}${x(dose).toFixed(2)},${y(p).toFixed(2)}`);
    pen = "L";
  });
  return parts.join(" ");
}

function drawAxes(root, { x, y, x0, x1, plotWidth, plotHeight }) {
  const bottom = PLOT.top + plotHeight;
  const axes = svgElement("g", { class: "axes" }, root);
  const step = niceStep(x1 - x0, 8);
  for (let tick = Math.ceil(x0 / step) * step; tick <= x1 + 1e-9; tick += step) {
    svgElement("line", { class: "grid", x1: x(tick), x2: x(tick), y1: PLOT.top, y2: bottom }, axes);
    svgElement("text", { class: "tick", x: x(tick), y: bottom + 18, "text-anchor": "middle" }, axes)
      .textContent = String(Math.round(tick * 100) / 100);
  }
  for (let i = 0; i <= 5; i += 1) {
    const p = i / 5;
    svgElement("line", { class: "grid", x1: PLOT.left, x2: PLOT.left + plotWidth, y1: y(p), y2: y(p) }, axes);
    svgElement("text", { class: "tick", x: PLOT.left - 8, y: y(p) + 4, "text-anchor": "end" }, axes)
      .textContent = `${i * 20} %`;
  }
  svgElement("line", { class: "axis", x1: PLOT.left, x2: PLOT.left + plotWidth, y1: bottom, y2: bottom }, axes);
  svgElement("line", { class: "axis", x1: PLOT.left, x2: PLOT.left, y1: PLOT.top, y2: bottom }, axes);
  const xLabel = svgElement("text", { class: "axis-label", x: PLOT.left + plotWidth / 2, y: bottom + 44,
    "text-anchor": "middle" }, axes);
  xLabel.textContent = "Total prescription dose (Gy)";
  xLabel.dataset.axis = "x";
  const yLabel = svgElement("text", { class: "axis-label", x: 0, y: 0, "text-anchor": "middle",
    transform: `translate(${PLOT.left - 50},${PLOT.top + plotHeight / 2}) rotate(-90)` }, axes);
  yLabel.textContent = "Probability";
  yLabel.dataset.axis = "y";
}

function drawLegend(root, series, markers, x0, x1) {
  const legend = svgElement("g", { class: "legend",
    transform: `translate(${PLOT.width - PLOT.right + 18},${PLOT.top + 6})` }, root);
  legend.dataset.role = "legend";
  let row = 0;
  const entry = (label, draw) => {
    const g = svgElement("g", { transform: `translate(0,${row * 22})` }, legend);
    draw(g);
    svgElement("text", { class: "legend-text", x: 34, y: 4 }, g).textContent = label;
    row += 1;
  };
  for (const s of series) {
    entry(s.label, (g) => svgElement("line", { class: `curve ${s.cls}`, stroke: s.colour, x1: 0, x2: 26, y1: 0,
      y2: 0 }, g));
  }
  for (const m of markers) {
    if (typeof m.dose !== "number" || !Number.isFinite(m.dose)) continue;
    if (m.dose >= x0 && m.dose <= x1) {
      entry(`${m.label} ${m.dose.toFixed(1)} Gy`, (g) => svgElement("line", { class: `marker ${m.cls}`, x1: 13,
        x2: 13, y1: -8, y2: 8 }, g));
    } else {
      entry(`${m.label} ${m.dose.toFixed(1)} Gy (off scale)`, (g) => {
        svgElement("text", { class: "legend-text", x: 13, y: 4, "text-anchor": "middle" }, g).textContent =
          m.dose > x1 ? "\u2192" : "\u2190";
      });
    }
  }
  entry("outside the rails", (g) => svgElement("rect", { class: "outside-rails", x: 0, y: -7, width: 26,
    height: 14 }, g));
}

/* ------------------------------------------------------------------------------------------ downloads */

function download(filename, object) {
  const blob = new Blob([`${JSON.stringify(object, null, 2)}\n`], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function safeName(id) {
  return String(id).replace(/[^A-Za-z0-9._-]+/g, "_");
}

async function downloadObjectives() {
  if (!state.body) return;
  await busy([$("download-objectives")], "building objectives.json\u2026", async () => {
    const result = await api("POST", "v1/objectives", { json: state.body });
    download(`${safeName(result.record.patient_id)}.objectives.json`, result.objectives);
  });
}

/* -------------------------------------------------------------------------------------------- wiring */

function init() {
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) $("token").value = saved;
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    connect();
  });
  $("patient-form").addEventListener("submit", (event) => {
    event.preventDefault();
    prescribePatient();
  });
  $("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    prescribeUpload();
  });
  $("download-record").addEventListener("click", () => {
    if (state.record) download(`${safeName(state.record.patient_id)}.prescription.json`, state.record);
  });
  $("download-objectives").addEventListener("click", downloadObjectives);
  showServer();
  if (saved) connect();
}

document.addEventListener("DOMContentLoaded", init);
