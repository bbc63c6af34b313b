// The panels that decode latent codes: samples from the prior (Sample), a walk between two uploaded
// inputs (Interpolate), and the latent manifold map (one Decode call of grid x grid codes).

import { rpc } from "./api.js";
import { barMosaic, imageCanvas, mosaic, numberTable } from "./draw.js";
import { uploadedRow } from "./inputs.js";
import { dimensionAxes, gridLatents } from "./model.js";
import { busy, done } from "./status.js";

const field = (id) => document.getElementById(id);

// Rows of model-space values drawn as image tiles (one canvas each) or as a table of raw values.
function showRows(container, rows, facts, labels) {
  container.replaceChildren();
  if (facts.image) {
    rows.forEach((row, index) => {
      const tile = container.appendChild(imageCanvas(facts.shadeOf(row), facts.image));
      if (labels) tile.title = labels[index];
    });
  } else {
    container.appendChild(numberTable(rows.map(facts.rawOf), labels));
  }
}

// Integer input within [low, high], or an Error that says which field and what range.
function integer(id, label, low, high) {
  const value = Number(field(id).value);
  if (!Number.isInteger(value) || value < low || value > high) {
    throw new Error(`${label} must be a whole number from ${low} to ${high}`);
  }
  return value;
}

export function sample(state) {
  const line = field("sample-status");
  return busy(field("sample-go"), line, async () => {
    const n = integer("sample-n", "samples", 1, Math.min(64, state.facts.info.maxSampleN));
    const seed = field("sample-seed").value.trim();
    const temperature = Number(field("sample-temperature").value);
    const body = { n, temperature };
    if (seed !== "") body.seed = seed;  // uint64: a string in the JSON mapping
    const reply = await rpc(state.model, "sample", body);
    const rows = field("sample-kind").value === "draw" ? reply.x : reply.xMean;
    showRows(field("sample-grid"), rows, state.facts);
    field("sample-seed").value = reply.seed;  // the seed the server used, so the grid can be redrawn
    done(line, `${n} samples of ${reply.model.name} version ${reply.model.version}, seed ${reply.seed}, temperature ${temperature}.`);
  });
}

export function interpolate(state) {
  const line = field("interp-status");
  return busy(field("interp-go"), line, async () => {
    const steps = integer("interp-steps", "steps", 2, Math.min(64, state.facts.info.maxK));
    const start = await uploadedRow(field("interp-start-file"), field("interp-start-row"), state.facts);
    // One CSV file may hold both ends: the end's file defaults to the start's.
    const end = await uploadedRow(field("interp-end-file"), field("interp-end-row"), state.facts, field("interp-start-file").files[0]);
    const path = field("interp-path").value;
    const reply = await rpc(state.model, "interpolate", { xStart: [start], xEnd: [end], steps, path });
    const labels = reply.t.map((t) => `t = ${t.toFixed(2)}`);
    showRows(field("interp-strip"), reply.xMean[0], state.facts, labels);
    done(line, `${steps} points on the ${path.endsWith("SPHERICAL") ? "spherical" : "straight"} path, E[x|z] at each.`);
  });
}

// Each feature's deviation from its mean over the map, in units of its spread there: a table's features
// differ in scale, and what the map shows is how each one changes across the plane.
function standardized(rows) {
  const count = rows.length;
  const means = rows[0].map((_, feature) => rows.reduce((sum, row) => sum + row[feature], 0) / count);
  const spreads = means.map((mean, feature) =>
    Math.sqrt(rows.reduce((sum, row) => sum + (row[feature] - mean) ** 2, 0) / count) || 1);
  return rows.map((row) => row.map((value, feature) => (value - means[feature]) / spreads[feature]));
}

// The plane's two axes: two chosen latent dimensions, or the principal plane GetModelInfo reports.
function planeAxes(info) {
  if (field("manifold-plane").value === "principal") {
    return [info.latentMap.directions[0].unit, info.latentMap.directions[1].unit];
  }
  const last = info.latentDim - 1;
  const first = integer("manifold-dim-a", "the first dimension", 0, last);
  const second = integer("manifold-dim-b", "the second dimension", 0, last);
  if (first === second) throw new Error("choose two different latent dimensions");
  return dimensionAxes(info.latentDim, first, second);
}

export function manifold(state) {
  const line = field("manifold-status");
  return busy(field("manifold-go"), line, async () => {
    const info = state.facts.info;
    const grid = integer("manifold-grid", "the grid", 2, Math.min(30, Math.floor(Math.sqrt(info.maxRows))));
    const reply = await rpc(state.model, "decode", { z: gridLatents(planeAxes(info), grid) });
    const rows = info.likelihood === "bernoulli" ? reply.bernoulli.probs : reply.gaussian.mean;
    const map = state.facts.image
      ? mosaic(rows.map(state.facts.shadeOf), state.facts.image, grid)
      : barMosaic(standardized(rows), grid);
    map.classList.add("map");
    map.dataset.grid = String(grid);
    field("manifold-map").replaceChildren(map);
    done(line, `E[x|z] on a ${grid} x ${grid} grid at the prior's quantiles (one Decode call of ${grid * grid} rows); ` +
      "first axis left to right, second bottom to top" +
      (state.facts.image ? "." : "; bars: each feature's deviation from its mean over the map."));
  });
}

// Shows the principal-plane choice only for models that report one (GetModelInfo.latentMap).
export function preparePlane(info) {
  const principal = field("manifold-plane").querySelector('option[value="principal"]');
  const available = Boolean(info.latentMap && info.latentMap.directions && info.latentMap.directions.length >= 2);
  principal.disabled = !available;
  field("manifold-plane").value = available ? "principal" : "dimensions";
  field("manifold-dim-a").max = field("manifold-dim-b").max = String(info.latentDim - 1);
  field("manifold-dim-b").value = String(Math.min(1, info.latentDim - 1));
}
