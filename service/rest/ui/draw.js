// Drawing: images and mosaics of model rows, error heat maps, bar charts and number tables. Canvases
// keep their natural pixel size; CSS scales them (pixelated), so nothing here depends on the screen.

const clamp = (value) => Math.max(0, Math.min(1, value));

// Writes one row of screen intensities (layout: facts.image) into `image` at (left, top).
function putRow(image, shades, layout, left, top) {
  const { channels, height, width, channelsLast } = layout;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const pixel = y * width + x;
      const at = 4 * ((top + y) * image.width + left + x);
      for (let rgb = 0; rgb < 3; rgb++) {
        const channel = channels === 1 ? 0 : rgb;
        const index = channelsLast ? pixel * channels + channel : channel * height * width + pixel;
        image.data[at + rgb] = Math.round(255 * clamp(shades[index]));
      }
      image.data[at + 3] = 255;
    }
  }
}

// A canvas of tiles, `columns` to a line, one per row of shades, `gap` pixels apart.
export function mosaic(rows, layout, columns, gap = 1) {
  const lines = Math.ceil(rows.length / columns);
  const canvas = document.createElement("canvas");
  canvas.width = columns * layout.width + (columns - 1) * gap;
  canvas.height = lines * layout.height + (lines - 1) * gap;
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  const image = context.getImageData(0, 0, canvas.width, canvas.height);
  rows.forEach((shades, index) => {
    const left = (index % columns) * (layout.width + gap);
    const top = Math.floor(index / columns) * (layout.height + gap);
    putRow(image, shades, layout, left, top);
  });
  context.putImageData(image, 0, 0);
  canvas.className = "pixels";
  return canvas;
}

export function imageCanvas(shades, layout) {
  const canvas = mosaic([shades], layout, 1);
  canvas.classList.add("tile");
  return canvas;
}

// Each pixel's mean over its channels (the layout's channel order), [H * W].
function pixelMeans(values, layout) {
  const { channels, height, width, channelsLast } = layout;
  return Array.from({ length: height * width }, (_, pixel) => {
    let sum = 0;
    for (let channel = 0; channel < channels; channel++) {
      sum += values[channelsLast ? pixel * channels + channel : channel * height * width + pixel];
    }
    return sum / channels;
  });
}

// The image in grey with each pixel's share of the largest error laid over it in red.
export function heatCanvas(shades, errors, layout) {
  const grey = pixelMeans(shades, layout);
  const perPixel = pixelMeans(errors, layout);
  const largest = Math.max(...perPixel) || 1;
  const canvas = imageCanvas(grey, { ...layout, channels: 1, channelsLast: false });
  const context = canvas.getContext("2d");
  const image = context.getImageData(0, 0, canvas.width, canvas.height);
  perPixel.forEach((error, pixel) => {
    const heat = error / largest;  // 0: the grey image; 1: pure red
    image.data[4 * pixel] = Math.round(image.data[4 * pixel] * (1 - heat) + 255 * heat);
    image.data[4 * pixel + 1] = Math.round(image.data[4 * pixel + 1] * (1 - heat));
    image.data[4 * pixel + 2] = Math.round(image.data[4 * pixel + 2] * (1 - heat));
  });
  context.putImageData(image, 0, 0);
  return canvas;
}

// A definition list of [term, value, name] (name, or the term, marks the value for tests and styles).
export function factList(list, pairs) {
  list.replaceChildren();
  for (const [term, value, name] of pairs) {
    list.appendChild(document.createElement("dt")).textContent = term;
    const detail = list.appendChild(document.createElement("dd"));
    detail.textContent = value;
    detail.dataset.fact = name || term;
  }
  return list;
}

// A chart canvas of a fixed drawing size that CSS scales to its column's width.
export function chartCanvas(width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.className = "chart";
  return canvas;
}

// Vertical bars of `values` (>= 0 or signed) into `canvas`, with a label under every `labelEvery`-th.
export function bars(canvas, values, color = "#c0392b", labelEvery = 1) {
  const context = canvas.getContext("2d");
  const pad = 16;
  const low = Math.min(0, ...values);
  const high = Math.max(0, ...values) || 1;
  const span = high - low || 1;
  const zero = pad + ((high - 0) / span) * (canvas.height - 2 * pad);
  const step = (canvas.width - 2) / values.length;
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = color;
  values.forEach((value, index) => {
    const top = pad + ((high - Math.max(value, 0)) / span) * (canvas.height - 2 * pad);
    const bottom = pad + ((high - Math.min(value, 0)) / span) * (canvas.height - 2 * pad);
    context.fillRect(1 + index * step + step * 0.1, top, step * 0.8, Math.max(1, bottom - top));
  });
  context.fillStyle = "#555";
  context.fillRect(0, zero, canvas.width, 1);
  context.font = "11px sans-serif";
  context.textAlign = "center";
  values.forEach((_, index) => {
    if (index % labelEvery === 0) context.fillText(String(index), 1 + (index + 0.5) * step, canvas.height - 3);
  });
  return canvas;
}

// A table of numbers (3 significant digits), columns f0..f{D-1} after an optional first label column.
export function numberTable(rows, labels) {
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  if (labels) head.appendChild(document.createElement("th")).textContent = "";
  rows[0].forEach((_, index) => {
    head.appendChild(document.createElement("th")).textContent = `f${index}`;
  });
  const body = table.createTBody();
  rows.forEach((row, index) => {
    const line = body.insertRow();
    if (labels) line.appendChild(document.createElement("th")).textContent = labels[index];
    row.forEach((value) => {
      line.insertCell().textContent = Number(value).toPrecision(3);
    });
  });
  const wrapper = document.createElement("div");
  wrapper.className = "scroll";  // a wide table scrolls inside its panel, never the page
  wrapper.appendChild(table);
  return wrapper;
}

// Small signed bar strips of model-space rows, in a grid (the manifold map of a table model).
export function barMosaic(rows, columns, tile = 48) {
  const canvas = chartCanvas(columns * tile, Math.ceil(rows.length / columns) * tile);
  const context = canvas.getContext("2d");
  const largest = Math.max(...rows.flat().map(Math.abs)) || 1;
  rows.forEach((row, index) => {
    const left = (index % columns) * tile;
    const top = Math.floor(index / columns) * tile;
    const step = (tile - 4) / row.length;
    context.strokeStyle = "#ddd";
    context.strokeRect(left + 0.5, top + 0.5, tile - 1, tile - 1);
    row.forEach((value, feature) => {
      const height = (value / largest) * (tile / 2 - 3);
      context.fillStyle = value >= 0 ? "#2e6da4" : "#c0392b";
      context.fillRect(left + 2 + feature * step, top + tile / 2 - Math.max(height, 0), Math.max(1, step - 1), Math.abs(height));
    });
  });
  return canvas;
}
