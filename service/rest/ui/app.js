// The model explorer: asks for a token, lists the served models (Triton's repository index), and
// fills each panel from the chosen model version over the HTTP APIs. See docs/ui.md.

import { modelInfo, savedToken, saveToken, servedModels } from "./api.js";
import { showCard } from "./card.js";
import { modelFacts } from "./model.js";
import { interpolate, manifold, preparePlane, sample } from "./panels.js";
import { monitor, prepareScores, score } from "./score.js";
import { clearBanner, done, fail } from "./status.js";

const field = (id) => document.getElementById(id);
const state = { model: null, facts: null, models: new Map() };

function fillSelect(select, values, chosen) {
  select.replaceChildren(...values.map((value) => new Option(value, value)));
  if (values.includes(chosen)) select.value = chosen;
}

// Image models take image files, table models CSV files with a row number; choices start empty.
function prepareUploads(facts) {
  document.body.classList.toggle("kind-image", Boolean(facts.image));
  document.body.classList.toggle("kind-table", !facts.image);
  for (const input of document.querySelectorAll("input.upload")) {
    input.accept = facts.image ? "image/*" : ".csv,text/csv,text/plain";
    input.value = "";  // a file chosen for another model no longer fits
  }
}

// What one model's panels showed means nothing for another: emptied when the model changes.
function clearOutputs() {
  for (const id of ["interp-strip", "score-result", "score-map", "monitor-body"]) field(id).replaceChildren();
  for (const line of document.querySelectorAll("section .status")) done(line, "");
}

// Loads the chosen version's card, then draws every panel from it once.
async function chooseModel() {
  const line = field("card-status");
  const name = field("model").value;
  if (!name) return;
  const versions = [...state.models.get(name)].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  fillSelect(field("version"), versions, field("version").value || versions[versions.length - 1]);
  const model = { name, version: field("version").value };
  document.body.dataset.drawn = "";
  try {
    const info = await modelInfo(model);
    state.model = model;
    state.facts = modelFacts(info);
    clearOutputs();
    prepareUploads(state.facts);
    preparePlane(info);
    prepareScores(info);
    showCard(document, info);
    document.body.dataset.model = `${name}/${info.model.version}`;
    done(line, "");
  } catch (error) {
    fail(line, error);
    return;
  }
  await Promise.all([sample(state), manifold(state), monitor(state)]);
  document.body.dataset.drawn = document.body.dataset.model;  // every panel shows this model now
}

// Lists the models; on success the token works, and the first model is shown.
async function start() {
  clearBanner();
  try {
    state.models = await servedModels();
  } catch (error) {
    fail(field("card-status"), error);
    return;
  }
  const names = [...state.models.keys()].sort();
  fillSelect(field("model"), names, field("model").value);
  field("version").value = "";
  await chooseModel();
}

function wire() {
  field("token").value = savedToken();
  field("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveToken(field("token").value.trim());
    start();
  });
  field("model").addEventListener("change", () => {
    field("version").value = "";
    chooseModel();
  });
  field("version").addEventListener("change", chooseModel);
  const actions = { "sample-go": sample, "interp-go": interpolate, "manifold-go": manifold, "score-go": score, "monitor-go": monitor };
  for (const [id, action] of Object.entries(actions)) {
    field(id).addEventListener("click", () => state.facts && action(state));
  }
  // Enter in a panel's field runs its action instead of submitting (and reloading) the page.
  for (const form of document.querySelectorAll("form.controls")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      form.querySelector("button").click();
    });
  }
}

wire();
start();
