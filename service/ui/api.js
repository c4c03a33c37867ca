// Calls to the gateway from the page: same origin, JSON, the API key (when one is needed) as a Bearer token.
// The key lives in sessionStorage only (gone when the tab closes) and is never put in a URL.

const KEY = "sae-router-key";
const listeners = new Set();

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

// fn(error) runs when a call is refused with 401: the page then asks for a key.
export function onUnauthorized(fn) {
  listeners.add(fn);
}

export class ApiError extends Error {
  constructor(status, body, headers) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || null;
    this.param = err.param || null;
    this.headers = headers;
  }
}

// → {body, headers}; throws ApiError (an OpenAI-style error body) on a non-2xx answer.
export async function call(path, { method = "GET", body } = {}) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  const key = apiKey();
  if (key) headers.authorization = `Bearer ${key}`;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const error = new ApiError(res.status, data, res.headers);
    if (res.status === 401) listeners.forEach((fn) => fn(error));
    throw error;
  }
  return { body: data, headers: res.headers };
}
