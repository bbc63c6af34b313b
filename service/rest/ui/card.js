// The model's card: shapes, likelihood, preprocessing, training metrics, and each score's
// calibration distribution with its thresholds, all from GetModelInfo.

import { chartCanvas, factList } from "./draw.js";

const scoreName = (score) => score.replace("SCORE_TYPE_", "").toLowerCase().replaceAll("_", " ");

function metrics(split) {
  if (!split) return "not recorded";
  return `ELBO ${split.elboNats.toFixed(2)} nats, -IWAE(k=${split.iwaeK}) ${split.iwaeNllNats.toFixed(2)} nats, ` +
    `${split.bitsPerDim.toFixed(3)} bits/dim (${split.numExamples} rows)`;
}

// The usual false-positive rates and the calibration level whose quantile is their threshold.
const RATES = [[0.1, 0.9], [0.05, 0.95], [0.01, 0.99], [0.001, 0.999]];

// What is served of a score's distribution is its quantiles (levels 0.5 ... 0.999), its mean and
// standard deviation: the chart is the histogram those determine above the median (each bar holds
// the mass between two quantiles, its height that mass over its width), the quantile curve over it,
// and the threshold of each usual false-positive rate marked where it falls.
function calibrationChart(entry) {
  const canvas = chartCanvas(360, 150);
  canvas.dataset.score = entry.score;
  const context = canvas.getContext("2d");
  const q = entry.quantiles;
  const spread = q[q.length - 1].value - q[0].value || entry.std || 1;
  const low = Math.min(q[0].value - 0.6 * spread, entry.mean - 2 * entry.std);
  const high = q[q.length - 1].value + 0.08 * spread;
  const pad = { left: 8, right: 8, top: 22, bottom: 22 };
  const x = (value) => pad.left + ((value - low) / (high - low)) * (canvas.width - pad.left - pad.right);
  const y = (level) => canvas.height - pad.bottom - level * (canvas.height - pad.top - pad.bottom);
  const densities = q.slice(1).map((point, index) => (point.level - q[index].level) / Math.max(point.value - q[index].value, 1e-12));
  const tallest = Math.max(...densities);
  context.fillStyle = "#bcd3ea";
  densities.forEach((density, index) => {
    const top = y(0.9 * (density / tallest));
    context.fillRect(x(q[index].value), top, Math.max(1, x(q[index + 1].value) - x(q[index].value)), y(0) - top);
  });
  context.strokeStyle = "#2e6da4";
  context.lineWidth = 2;
  context.beginPath();
  q.forEach((point, index) => (index ? context.lineTo(x(point.value), y(point.level)) : context.moveTo(x(point.value), y(point.level))));
  context.stroke();
  context.font = "11px sans-serif";
  context.fillStyle = "#333";
  context.fillText(`median ${q[0].value.toPrecision(4)}`, x(q[0].value) + 3, y(0.5) + 12);
  let marked = 0;
  for (const [rate, level] of RATES) {
    const point = q.find((each) => Math.abs(each.level - level) < 1e-9);
    if (!point) continue;
    marked += 1;
    context.fillStyle = "#c0392b";
    context.fillRect(x(point.value), pad.top - 4, 1, y(0) - pad.top + 4);
    context.fillText(`${rate * 100}%`, x(point.value) - 10, pad.top - 8 + (marked % 2) * 10);
  }
  canvas.dataset.thresholds = String(marked);
  context.fillStyle = "#555";
  context.fillText(low.toPrecision(4), pad.left, canvas.height - 6);
  context.textAlign = "right";
  context.fillText(high.toPrecision(4), canvas.width - pad.right, canvas.height - 6);
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
    caption.textContent = `${scoreName(entry.score)}${marker}: mean ${entry.mean.toPrecision(4)}, sd ` +
      `${entry.std.toPrecision(3)}, ${entry.numExamples} calibration rows. Thresholds by false-positive rate: ${thresholdText(entry)}`;
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
