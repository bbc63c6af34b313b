// What the page needs to know of a model to draw it, from GetModelInfo alone: is it an image (and
// of which layout), and how model-space values map back to raw values and to screen intensities.

// An image has 2 dims [H, W], or 3 with the channels first [C, H, W] (vae-train's images) or last.
function imageLayout(shape) {
  const dims = shape.map(Number);
  if (dims.length === 2) return { channels: 1, height: dims[0], width: dims[1], channelsLast: false };
  if (dims.length !== 3) return null;
  if (dims[0] === 1 || dims[0] === 3) return { channels: dims[0], height: dims[1], width: dims[2], channelsLast: false };
  if (dims[2] === 1 || dims[2] === 3) return { channels: dims[2], height: dims[0], width: dims[1], channelsLast: true };
  return null;
}

// Per-feature loc and scale: the proto allows one value for all features, or one per feature.
function perFeature(values, count, fallback) {
  if (!values || values.length === 0) return new Array(count).fill(fallback);
  return values.length === 1 ? new Array(count).fill(values[0]) : values;
}

export function modelFacts(info) {
  const count = info.numFeatures;
  const prep = info.preprocessing || {};
  const loc = perFeature(prep.loc, count, 0);
  const scale = perFeature(prep.scale, count, 1);
  // Screen range of raw values: a scalar pixel scaling (x / 16, x / 255) maps [0, 1] of the model's space
  // onto the pixels' range; per-feature standardization of images leaves raw 0..255 pixels.
  const scalar = !prep.scale || prep.scale.length <= 1;
  const low = scalar ? loc[0] : 0;
  const high = scalar ? loc[0] + scale[0] : 255;
  return {
    info,
    count,
    latentDim: info.latentDim,
    image: imageLayout(info.inputShape || []),
    rawOf: (row) => row.map((value, index) => value * scale[index] + loc[index]),
    // Screen intensity in [0, 1] of one model-space row.
    shadeOf: (row) => row.map((value, index) => (value * scale[index] + loc[index] - low) / (high - low)),
    // Screen intensity in [0, 1] of one raw row (an upload, as sent).
    shadeOfRaw: (row) => row.map((value) => (value - low) / (high - low)),
    // Raw value of a screen intensity in [0, 1] (an uploaded image's pixels).
    rawOfShade: (shade) => low + shade * (high - low),
  };
}

// Acklam's rational approximation of the standard normal quantile Phi^-1 (relative error < 1.2e-9).
const A = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
const B = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
const C = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
const D = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];

function tail(q) {
  return (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1);
}

export function normalQuantile(p) {
  if (p < 0.02425) return tail(Math.sqrt(-2 * Math.log(p)));
  if (p > 1 - 0.02425) return -tail(Math.sqrt(-2 * Math.log(1 - p)));
  const q = p - 0.5;
  const r = q * q;
  return ((((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q) /
    (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1);
}

// The manifold map's codes, as core/manifold.py's grid_latents: tile (row r, column c) is
// z = q[c] a + q[grid - 1 - r] b, q the prior's quantiles Phi^-1((i + 0.5) / grid), in reading order.
export function gridLatents(axes, grid) {
  const q = Array.from({ length: grid }, (_, index) => normalQuantile((index + 0.5) / grid));
  const rows = [];
  for (let r = 0; r < grid; r++) {
    for (let c = 0; c < grid; c++) {
      rows.push(axes[0].map((value, index) => q[c] * value + q[grid - 1 - r] * axes[1][index]));
    }
  }
  return rows;
}

// Two unit vectors e_first, e_second of the latent space.
export function dimensionAxes(latentDim, first, second) {
  const unit = (dim) => Array.from({ length: latentDim }, (_, index) => (index === dim ? 1 : 0));
  return [unit(first), unit(second)];
}
