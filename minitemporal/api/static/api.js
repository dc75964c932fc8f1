// The /v1 API with the user's token. The token lives in sessionStorage only: it is gone when
// the tab closes, never sent as a cookie, and other tabs do not see it.

const TOKEN_KEY = "minitemporal.token";

export const token = {
  get() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null;
    }
  },
  set(value) {
    sessionStorage.setItem(TOKEN_KEY, value);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** An answer other than 2xx, with its RFC 9457 problem document when there is one. */
export class ApiError extends Error {
  constructor(status, problem, fallback) {
    super((problem && problem.detail) || fallback || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
  }

  /** On reading, 401 (no or unknown token) and 403 (no `read` scope) both ask for a token. */
  get needsToken() {
    return this.status === 401 || this.status === 403;
  }
}

export function authHeaders() {
  const t = token.get();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** The error an unsuccessful response stands for. */
export async function errorOf(response) {
  return new ApiError(response.status, await problemOf(response), response.statusText);
}

/** fetch() a /v1 path as JSON; throws ApiError (status 0: the server did not answer). */
export async function request(path, { method = "GET", signal } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      signal,
      headers: { Accept: "application/json", ...authHeaders() },
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, null, "the server did not answer");
  }
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

export function jobUrl(id, suffix = "") {
  return `/v1/jobs/${encodeURIComponent(id)}${suffix}`;
}
