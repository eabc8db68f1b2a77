// api.js — the page's door to its server: the token (session storage), JSON calls with
// `Authorization: Bearer`, and the 401 that asks for the token again. Same origin only.

const KEY = "fifoflow-token";

export class Unauthorized extends Error {}

/** The token: taken once from ?token= (then removed from the address bar), else the
 * tab's session storage; null when the page must ask for it. */
export function takeToken() {
  const url = new URL(location.href);
  const given = url.searchParams.get("token");
  if (given !== null) {
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
    if (given) sessionStorage.setItem(KEY, given);
  }
  return sessionStorage.getItem(KEY);
}

export function setToken(token) {
  sessionStorage.setItem(KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

/** A call to the API; the JSON answer, or an Error carrying the server's message (an
 * Unauthorized for a 401). */
export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) ?? ""}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const answer = await fetch(path, init);
  const text = await answer.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (answer.status === 401) throw new Unauthorized(data?.error?.message ?? "wrong token");
  if (!answer.ok) {
    const error = new Error(data?.error?.message ?? `${method} ${path}: ${answer.status}`);
    error.status = answer.status;
    error.body = data;
    throw error;
  }
  return data;
}
