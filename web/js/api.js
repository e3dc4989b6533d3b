// api.js: the pneumo serve API as the page uses it (see README, "The web page and the stack").
// Every call sends the bearer token; a non-2xx answer becomes an ApiError with the server's
// JSON message. Not a general HTTP client: same origin only, no retries.

const BASE = '/api/v1';

export class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;         // 0 when the server could not be reached
    this.retryAfter = retryAfter; // seconds, from Retry-After, or null
  }
}

async function call(token, path, init = {}) {
  const headers = { Authorization: `Bearer ${token}`, ...(init.headers || {}) };
  let res;
  try {
    res = await fetch(BASE + path, { ...init, headers, cache: 'no-store' });
  } catch {
    throw new ApiError(0, 'The server could not be reached. Check the connection and try again.');
  }
  if (res.ok) return res;
  let message = '';
  try {
    message = (await res.json()).error || '';
  } catch { /* nginx's own 413/429/502 pages are HTML */ }
  const retry = Number.parseInt(res.headers.get('Retry-After') || '', 10);
  throw new ApiError(res.status, message, Number.isFinite(retry) ? retry : null);
}

export async function predict(token, file) {
  const body = new FormData();
  body.append('image', file, file.name);
  return (await call(token, '/predictions', { method: 'POST', body })).json();
}

export async function history(token, limit = 20) {
  return (await (await call(token, `/predictions?limit=${limit}`)).json()).predictions || [];
}

// The heat map needs the Authorization header, so it is fetched here and shown through a
// blob: URL; the caller revokes it.
export async function heatmapUrl(token, path) {
  if (!path.startsWith(BASE + '/')) throw new ApiError(0, 'unexpected heat map address');
  const blob = await (await call(token, path.slice(BASE.length))).blob();
  return URL.createObjectURL(blob);
}
