// The JSON API, called with the signed-in key as a bearer token. The key lives in
// sessionStorage: it survives a reload of the tab but not the closing of the browser.

const KEY_NAME = "warden.apiKey";
const unauthorizedListeners = new Set();

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_NAME);
}

export function storeKey(key) {
  sessionStorage.setItem(KEY_NAME, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_NAME);
}

/** Called with the error when the server refuses the key (revoked, or a server with another database). */
export function onUnauthorized(listener) {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

export function authHeaders(key = apiKey()) {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** An error body ({code, message}) or a network failure as an ApiError. */
export async function errorOf(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's error page): the status line is all there is.
  }
  const code = typeof body.code === "string" ? body.code : `http_${response.status}`;
  const message = typeof body.message === "string" ? body.message : `${response.status} ${response.statusText}`;
  return new ApiError(response.status, code, message, body.details);
}

export function networkError() {
  return new ApiError(0, "network_error", "Cannot reach the Warden server. Is it running?");
}

/**
 * Call the API. `query` values that are null, undefined or "" are left out. Returns the parsed
 * JSON, null for 204, or the Response itself with `raw: true`.
 */
export async function api(path, { method = "GET", body, query, signal, raw = false, key } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, String(value));
  }
  const headers = { Accept: "application/json", ...authHeaders(key ?? apiKey()) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw networkError();
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && key === undefined) {
      for (const listener of unauthorizedListeners) listener(error);
    }
    throw error;
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

export function path(strings, ...values) {
  // Tagged template: every interpolated id is URL-encoded, so an id can never add path segments.
  return strings.reduce((out, part, i) => out + part + (i < values.length ? encodeURIComponent(values[i]) : ""), "");
}
