// The HTTP APIs the page calls: VaeService over HTTP/JSON (/v1) and the Open Inference Protocol's
// repository index (/v2), with the user's bearer token. Nothing else leaves the page.

const TOKEN_KEY = "vae-serve-token";

// sessionStorage: the token lives as long as the tab, and is never written to disk by the page.
export function savedToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function saveToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// A refused call: the HTTP status and the server's own message (google.rpc.Status or OIP error).
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(json) {
  const sent = json ? { "Content-Type": "application/json" } : {};
  const token = savedToken();
  if (token) sent.Authorization = `Bearer ${token}`;
  return sent;
}

async function errorOf(reply) {
  let message = `HTTP ${reply.status}`;
  try {
    const body = await reply.json();
    message = body.message || body.error || message;
  } catch {
    // not JSON (a proxy's page, say): the status is all there is to say
  }
  return new ApiError(reply.status, message);
}

async function send(path, method, body) {
  let reply;
  try {
    reply = await fetch(path, {
      method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, `the server could not be reached (${error.message})`);
  }
  if (!reply.ok) throw await errorOf(reply);
  return reply.json();
}

// The /v1 path of a model, pinned to a version when one is chosen.
export function modelPath(model) {
  const name = encodeURIComponent(model.name);
  return model.version ? `/v1/models/${name}/versions/${encodeURIComponent(model.version)}` : `/v1/models/${name}`;
}

// A VaeService rpc by its custom verb (sample, decode, ...), replies' Tensors as nested arrays.
export function rpc(model, verb, body) {
  return send(`${modelPath(model)}:${verb}?tensors=array`, "POST", body);
}

export function modelInfo(model) {
  return send(`${modelPath(model)}/info`, "GET");
}

export function monitoring(model) {
  return send(`${modelPath(model)}/monitoring`, "GET");
}

// VaeService names from Triton's index of OIP models (<bundle>-encoder, -decoder, -elbo): name -> versions.
export async function servedModels() {
  const index = await send("/v2/repository/index", "POST", {});
  const models = new Map();
  for (const entry of index) {
    const name = entry.name.replace(/-(encoder|decoder|elbo)$/, "");
    if (!models.has(name)) models.set(name, new Set());
    models.get(name).add(entry.version);
  }
  return models;
}
