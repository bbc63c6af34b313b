// Rows from the user's files: an image scaled to the model's input shape, or a row of a CSV file.
// Both give raw values, as the server expects inputs (it applies the model's preprocessing itself).

// An image file as one raw row in the model's layout: drawn onto a canvas of the model's size, read
// back, each pixel's intensity in [0, 1] mapped to a raw value (facts.rawOfShade).
export async function imageRow(file, facts) {
  const { channels, height, width, channelsLast } = facts.image;
  const bitmap = await createImageBitmap(file);
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0, width, height);
  const pixels = context.getImageData(0, 0, width, height).data;
  const row = new Array(channels * height * width);
  for (let pixel = 0; pixel < height * width; pixel++) {
    const rgb = [pixels[4 * pixel], pixels[4 * pixel + 1], pixels[4 * pixel + 2]];
    for (let channel = 0; channel < channels; channel++) {
      // One channel: the mean of red, green and blue, so a grey PNG reads back its own values.
      const value = channels === 1 ? (rgb[0] + rgb[1] + rgb[2]) / 3 : rgb[channel];
      const at = channelsLast ? pixel * channels + channel : channel * height * width + pixel;
      row[at] = facts.rawOfShade(value / 255);
    }
  }
  return row;
}

// The numeric rows of a CSV text: separators , ; or tab; a first line that is not all numbers is a header.
export function csvRows(text) {
  const lines = text.split(/\r?\n/).filter((line) => line.trim() !== "");
  const rows = lines.map((line) => line.split(/[,;\t]/).map((cell) => cell.trim()));
  const numeric = (row) => row.every((cell) => cell !== "" && Number.isFinite(Number(cell)));
  const body = rows.length > 0 && !numeric(rows[0]) ? rows.slice(1) : rows;
  return body.map((row, index) => {
    if (!numeric(row)) throw new Error(`CSV data row ${index + 1} holds a value that is not a number`);
    return row.map(Number);
  });
}

// Row `number` (from 1) of a CSV file, checked against the model's feature count.
export async function csvRow(file, number, facts) {
  const rows = csvRows(await file.text());
  if (!(number >= 1 && number <= rows.length)) {
    throw new Error(`${file.name} has ${rows.length} data rows; choose a row from 1 to ${rows.length}`);
  }
  const row = rows[number - 1];
  if (row.length !== facts.count) {
    throw new Error(`row ${number} of ${file.name} has ${row.length} values; this model takes ${facts.count}`);
  }
  return row;
}

// One raw row from an upload slot: its file input and (for tables) its row-number input.
export async function uploadedRow(fileInput, rowInput, facts, fallbackFile) {
  const file = fileInput.files[0] || fallbackFile;
  if (!file) throw new Error("choose a file first");
  if (facts.image) return imageRow(file, facts);
  return csvRow(file, Number(rowInput.value), facts);
}
