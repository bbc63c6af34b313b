// The model's card: shapes, likelihood, preprocessing, training metrics, and each score's
// calibration histogram with its thresholds, all from GetModelInfo.

import { chartCanvas, factList } from "./draw.js";

const scoreName = (score) => score.replace("SCORE_TYPE_", "").toLowerCase().replaceAll("_", " ");

function metrics(split) {
  if (!split) return "not recorded";
  return `ELBO ${split.elboNats.toFixed(2)} nats, -IWAE(k=${split.iwaeK}) ${split.iwaeNllNats.toFixed(2)} nats, ` +
    `${split.bitsPerDim.toFixed(3)} bits/dim (${split.numExamples} rows)`;
}

// The usual false-positive rates and the calibration level whose quantile is their threshold.
const RATES = [[0.1, 0.9], [0.05, 0.95], [0.01, 0.99], [0.001, 0.999]];

// The plot area of the charts, in canvas pixels (data-plot on each canvas says where it is).
const PAD = { left: 8, right: 8, top: 24, bottom: 22 };

// Marks each usual false-positive rate's threshold (the served quantile at 1 - rate) with a red line
// and its rate; returns how many were marked.
function markThresholds(context, entry, x, top, bottom) {
  let marked = 0;
  for (const [rate, level] of RATES) {
    const point = entry.quantiles.find((each) => Math.abs(each.level - level) < 1e-9);
    if (!point) continue;
    marked += 1;
    context.fillStyle = "#c0392b";
    context.fillRect(Math.round(x(point.value)), top - 4, 1, bottom - top + 4);
    const label = `${rate * 100}%`;
    const left = Math.min(x(point.value) - 10, context.canvas.width - context.measureText(label).width - 1);
    context.fillText(label, Math.max(0, left), top - 6 - (marked % 2) * 10);
  }
  return marked;
}

// The served histogram of a score's calibration rows (GetModelInfo's ScoreCalibration.histogram:
// equal-width bins from the smallest to the largest score, rows per bin), a bar per bin, with the
// threshold of each usual false-positive rate marked where it falls.
function calibrationChart(entry) {
  const canvas = chartCanvas(360, 150);
  canvas.dataset.score = entry.score;
  const context = canvas.getContext("2d");
  const { edges, counts } = entry.histogram;
  const low = edges[0];
  const high = edges[edges.length - 1] > low ? edges[edges.length - 1] : low + 1;
  const right = canvas.width - PAD.right;
  const bottom = canvas.height - PAD.bottom;
  const x = (value) => PAD.left + ((value - low) / (high - low)) * (right - PAD.left);
  const tallest = Math.max(...counts) || 1;
  context.fillStyle = "#bcd3ea";
  counts.forEach((count, index) => {
    const top = Math.round(bottom - (count / tallest) * (bottom - PAD.top));
    const left = Math.round(x(edges[index]));
    context.fillRect(left, top, Math.max(1, Math.round(x(edges[index + 1])) - left - 1), bottom - top);
  });
  context.fillStyle = "#555";
  context.fillRect(PAD.left, bottom, right - PAD.left, 1);
  context.font = "11px sans-serif";
  canvas.dataset.thresholds = String(markThresholds(context, entry, x, PAD.top, bottom));
  canvas.dataset.bars = String(counts.length);
  canvas.dataset.plot = JSON.stringify([PAD.left, PAD.top, right, bottom]);
  context.fillStyle = "#555";
  context.fillText(low.toPrecision(4), PAD.left, canvas.height - 6);
  context.textAlign = "right";
  context.fillText(high.toPrecision(4), right, canvas.height - 6);
  return canvas;
}

function thresholdText(entry) {
  return RATES.map(([rate, level]) => {
    const point = entry.quantiles.find((each) => Math.abs(each.level - level) < 1e-9);
    return point ? `${rate * 100}%: ${point.value.toPrecision(5)}` : "";
  }).filter(Boolean).join(" · ");
}

function calibration(container, info) {
  container.replaceChildren();
  for (const entry of info.calibration) {
    const figure = container.appendChild(document.createElement("figure"));
    figure.appendChild(calibrationChart(entry));
    const caption = figure.appendChild(document.createElement("figcaption"));
    const marker = entry.score === info.defaultScore ? " (the default)" : "";
    const width = entry.histogram.edges[1] - entry.histogram.edges[0];
    caption.textContent = `${scoreName(entry.score)}${marker}: mean ${entry.mean.toPrecision(4)}, sd ` +
      `${entry.std.toPrecision(3)}, ${entry.numExamples} calibration rows in ${entry.histogram.counts.length} bins of ` +
      `${width.toPrecision(3)}. Thresholds by false-positive rate: ${thresholdText(entry)}`;
  }
}

export function showCard(root, info) {
  const prep = info.preprocessing || {};
  factList(root.querySelector("#card-facts"), [
    ["model", `${info.model.name} version ${info.model.version} (written ${info.createdAt})`],
    ["input shape", `[${info.inputShape.join(", ")}], ${info.numFeatures} features`],
    ["latent dimensions", String(info.latentDim)],
    ["likelihood", info.likelihood],
    ["preprocessing", `${prep.description || "none"} (x_model = (x - loc) / scale)`],
    ["validation", metrics(info.validation)],
    ["test", metrics(info.test)],
    ["metrics", info.binarization],
    ["default score", scoreName(info.defaultScore)],
    ["versions", info.availableVersions.join(", ")],
    ["limits", `${info.maxRows} rows per call, ${info.maxSampleN} samples per Sample call`],
  ]);
  calibration(root.querySelector("#card-calibration"), info);
}

export { scoreName };
