// Scoring an upload (ScoreAnomaly with its per-feature errors) and the monitoring state (GetMonitoring).

import { monitoring, rpc } from "./api.js";
import { scoreName } from "./card.js";
import { bars, chartCanvas, factList, heatCanvas, imageCanvas, numberTable } from "./draw.js";
import { uploadedRow } from "./inputs.js";
import { busy, done } from "./status.js";

const field = (id) => document.getElementById(id);

// The score choices: the model's default, then every score it is calibrated for.
export function prepareScores(info) {
  const select = field("score-type");
  select.replaceChildren(new Option(`default (${scoreName(info.defaultScore)})`, ""));
  for (const entry of info.calibration) select.add(new Option(scoreName(entry.score), entry.score));
}

// The error map: a heat map over the image, or a bar per feature (and their values) for a table.
function errorMap(container, row, errors, facts) {
  container.replaceChildren();
  if (facts.image) {
    const shades = facts.shadeOfRaw(row);
    container.appendChild(imageCanvas(shades, facts.image)).title = "the upload";
    const heat = container.appendChild(heatCanvas(shades, errors, facts.image));
    heat.classList.add("tile", "heat");
    heat.title = "squared reconstruction error per pixel, red where largest";
  } else {
    const every = Math.max(1, Math.ceil(errors.length / 24));
    container.appendChild(bars(chartCanvas(520, 160), errors, "#c0392b", every)).classList.add("heat");
    container.appendChild(numberTable([row, errors], ["value", "error"]));
  }
}

export function score(state) {
  const line = field("score-status");
  return busy(field("score-go"), line, async () => {
    const row = await uploadedRow(field("score-file"), field("score-row"), state.facts);
    const body = { x: [row], falsePositiveRate: Number(field("score-rate").value), returnFeatureErrors: true };
    if (field("score-type").value) body.score = field("score-type").value;
    const reply = await rpc(state.model, "scoreAnomaly", body);
    const flagged = reply.isAnomaly[0];
    factList(field("score-result"), [
      ["score", `${scoreName(reply.score)}: ${reply.scores[0].toPrecision(6)}`, "score"],
      ["percentile", `${(100 * reply.percentile[0]).toFixed(2)}% of the calibration rows score at most this`, "percentile"],
      ["p-value", reply.pValue[0].toPrecision(4), "p-value"],
      ["decision", flagged ? "anomalous" : "normal", "decision"],
      ["threshold", `${reply.threshold.toPrecision(6)} (false-positive rate ${reply.falsePositiveRate})`, "threshold"],
    ]);
    field("score-result").classList.toggle("flagged", flagged);
    errorMap(field("score-map"), row, reply.featureErrors[0], state.facts);
    done(line, `Scored by ${reply.model.name} version ${reply.model.version}; seed ${reply.seed}.`);
  });
}

function flagRates(rates) {
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const title of ["promised", "rows", "flagged", "observed", "p-value", ""]) {
    head.appendChild(document.createElement("th")).textContent = title;
  }
  for (const rate of rates) {
    const line = table.createTBody().insertRow();
    const observed = rate.observedRate;
    for (const text of [rate.falsePositiveRate, rate.rows, rate.flagged, observed.toPrecision(3), rate.pValue.toPrecision(3)]) {
      line.insertCell().textContent = String(text);
    }
    // The observed rate against its promise: the bar's full width is twice the promise.
    const meter = line.insertCell().appendChild(document.createElement("div"));
    meter.className = rate.alarm ? "meter alarm" : "meter";
    meter.appendChild(document.createElement("span")).style.width = `${Math.min(100, (50 * observed) / rate.falsePositiveRate)}%`;
    meter.title = rate.alarm ? "alarm: more flags than the promise allows" : "within its promise";
  }
  const wrapper = document.createElement("div");
  wrapper.className = "scroll";
  wrapper.appendChild(table);
  return wrapper;
}

// GetMonitoring's p-value histogram: a bar of rows per bucket (p at most each upper bound, above the
// one before), in slots of equal width, and the dark step line the rows each bucket expects when the
// p-values are uniform (data like the calibration): the total times the bucket's width. Each slot is
// labelled with its bucket's upper bound.
function pValueChart(histogram) {
  const canvas = chartCanvas(360, 150);
  const context = canvas.getContext("2d");
  const bounds = histogram.upperBounds;
  const counts = bounds.map((_, index) => Number(histogram.counts[index]));  // uint64: strings in JSON
  const total = histogram.counts.reduce((sum, count) => sum + Number(count), 0);
  const expected = bounds.map((bound, index) => total * (bound - (index ? bounds[index - 1] : 0)));
  const pad = { left: 8, right: 8, top: 10, bottom: 22 };
  const right = canvas.width - pad.right;
  const bottom = canvas.height - pad.bottom;
  const slot = (right - pad.left) / bounds.length;
  const tallest = Math.max(...counts, ...expected) || 1;
  const y = (count) => Math.round(bottom - (count / tallest) * (bottom - pad.top));
  context.font = "10px sans-serif";
  context.textAlign = "center";
  bounds.forEach((bound, index) => {
    const left = Math.round(pad.left + index * slot);
    context.fillStyle = "#333";  // under the bar: where the bar is taller, it shows beside it
    context.fillRect(left, y(expected[index]), Math.round(slot), 2);
    context.fillStyle = "#bcd3ea";
    context.fillRect(left + 3, y(counts[index]), Math.round(slot) - 6, bottom - y(counts[index]));
    context.fillStyle = "#555";
    context.fillText(String(bound), left + slot / 2, canvas.height - 8);
  });
  context.fillRect(pad.left, bottom, right - pad.left, 1);
  canvas.dataset.bars = String(bounds.length);
  canvas.dataset.plot = JSON.stringify([pad.left, pad.top, right, bottom]);
  canvas.classList.add("p-values");
  const figure = document.createElement("figure");
  figure.appendChild(canvas);
  figure.appendChild(document.createElement("figcaption")).textContent =
    `p-values of the ${total} rows scored, by bucket up to each bound (bars), and the rows each bucket expects if ` +
    "they are uniform, as on data like the calibration (line); the counts of vae_score_p_value on the metrics port.";
  return figure;
}

function scoreMonitor(entry) {
  const section = document.createElement("section");
  section.className = "monitor";
  section.appendChild(document.createElement("h3")).textContent =
    `${scoreName(entry.score)}, version ${entry.model.version}${entry.driftAlarm ? ": DRIFT ALARM" : ""}`;
  const drift = entry.driftStatistic === undefined
    ? "not evaluated yet"
    : `KS D ${entry.driftStatistic.toPrecision(3)}, p-value ${entry.driftPValue.toPrecision(3)}${entry.driftAlarm ? " (alarm)" : ""}`;
  const tails = entry.tailExceedances.map((tail) => `${tail.rowsAbove} of ${tail.windowRows} above the top ${tail.level * 100}%`);
  section.appendChild(factList(document.createElement("dl"), [
    ["rows scored", `${entry.rowsSeen} since loaded; window ${entry.windowRows} of ${entry.windowCapacityRows}`, "rows"],
    ["drift", `${drift}; ${entry.evaluations} tests so far`, "drift"],
    ["upper tail", tails.length ? tails.join("; ") : "not counted yet", "tail"],
    ["calibration rows", String(entry.calibrationRows), "calibration"],
  ]));
  if (entry.pValueHistogram) section.appendChild(pValueChart(entry.pValueHistogram));
  if (entry.flagRates.length) section.appendChild(flagRates(entry.flagRates));
  return section;
}

export function monitor(state) {
  const line = field("monitor-status");
  return busy(field("monitor-go"), line, async () => {
    const reply = await monitoring(state.model);
    const body = field("monitor-body");
    body.replaceChildren(...reply.scores.map(scoreMonitor));
    if (!reply.enabled) {
      done(line, "Monitoring is off on this server (--no-monitor).");
    } else {
      done(line, `Monitoring on: tests alarm below p = ${reply.alpha}, drift tested every ${reply.stepRows} rows. ` +
        (reply.scores.length ? "" : "No rows of this model scored yet."));
    }
  });
}
