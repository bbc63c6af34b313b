// What went wrong, said on the page: a refused token in the banner at the top (every panel needs
// the token), anything else in the panel that asked.

import { savedToken } from "./api.js";

const banner = () => document.getElementById("banner");

export function tokenMessage(error) {
  if (!savedToken()) {
    return `The server needs a token: enter one in the token field above. (The server said: ${error.message}.)`;
  }
  return `The server refused the token (${error.message}). Check it and enter it again above.`;
}

export function clearBanner() {
  banner().hidden = true;
  banner().textContent = "";
}

export function showBanner(text) {
  banner().textContent = text;
  banner().hidden = false;
}

// `line`: the panel's status element. Returns nothing; the error is shown, never thrown on.
export function fail(line, error) {
  if (error.status === 401) {
    showBanner(tokenMessage(error));
    line.textContent = "Refused: see the message at the top.";
  } else {
    line.textContent = error.status ? `The server answered ${error.status}: ${error.message}` : error.message;
  }
  line.classList.add("error");
}

export function done(line, text) {
  line.textContent = text;
  line.classList.remove("error");
}

// Runs an async panel action with its button disabled, its errors shown in `line`.
export async function busy(button, line, action) {
  button.disabled = true;
  done(line, "Working...");
  try {
    await action();
  } catch (error) {
    fail(line, error);
  } finally {
    button.disabled = false;
  }
}
