// Small helpers of the console: building elements, calling the admin API, formatting.

/** What a number the host does not give shows. */
export const DASH = '\u2014';
const SVG_NS = 'http://www.w3.org/2000/svg';

/** The first element matching a CSS selector. */
export const $ = (selector) => document.querySelector(selector);

/** `node` with attributes (`text` sets its text) and children. */
function filled(node, attrs, children) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

/** An HTML element with attributes (`text` sets its text) and children. */
export function el(tag, attrs = {}, ...children) {
  return filled(document.createElement(tag), attrs, children);
}

/** An SVG element with attributes. */
export function svg(tag, attrs = {}, ...children) {
  return filled(document.createElementNS(SVG_NS, tag), attrs, children);
}

// The admin token. `stagehost console` prints the console's address with it in the fragment
// (`#token=…`), which the browser never sends to a server; the page keeps it in this tab's
// sessionStorage, takes it out of the address bar and sends it on every call as
// `Authorization: Bearer …`. The console polls with fetch (no EventSource), so the token never
// has to travel in a URL.
const TOKEN_KEY = 'stagehost-admin-token';
const fragment = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
if (fragment) {
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(fragment[1]));
  window.history.replaceState(null, '', window.location.pathname + window.location.search);
}

/** `headers` with the admin token's `Authorization` added (when the page has one). */
export function authorized(headers = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...headers, authorization: `Bearer ${token}` } : headers;
}

/** Fetches `url` with the admin token; a refusal (401/403) also shows the page's sign-in note. */
export async function adminFetch(url, options = {}) {
  const response = await fetch(url, { cache: 'no-store', ...options, headers: authorized(options.headers) });
  if (response.status === 401 || response.status === 403) {
    const note = document.querySelector('#auth-note');
    if (note) note.hidden = false;
  }
  return response;
}

/** Fetches JSON; throws an Error carrying the host's `{"error"}` message. */
export async function api(method, url, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers['content-type'] = 'application/json';
    options.body = JSON.stringify(body);
  }
  const response = await adminFetch(url, options);
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!response.ok) {
    const why = (json && json.error) || text || response.statusText;
    throw new Error(`${why} (HTTP ${response.status})`);
  }
  return json;
}

export function say(id, text, kind = '') {
  const node = $(id);
  node.textContent = text;
  node.className = `message ${kind}`;
}

export const shortVersion = (v) => (v ? String(v).replace(/^sha256:/, '').slice(0, 8) : DASH);

export const clock = (iso) => {
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? DASH : at.toISOString().slice(11, 19);
};
export const clockMs = (iso) => {
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? DASH : at.toISOString().slice(11, 23);
};
export function age(seconds) {
  if (seconds === null || seconds === undefined) return DASH;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}
export function formatRate(rate) {
  if (rate === undefined || rate === null || !Number.isFinite(rate)) return DASH;
  return rate < 10 ? rate.toFixed(1) : String(Math.round(rate));
}
export const formatCount = (n) => (n === undefined || n === null || !Number.isFinite(n) ? DASH : String(Math.round(n)));

/** The longest common prefix of the names that ends in `-`, `.` or `_` (test runs prefix
 *  every topic), or "". */
export function commonPrefix(names) {
  if (names.length < 2) return '';
  let prefix = names[0];
  for (const name of names) while (!name.startsWith(prefix)) prefix = prefix.slice(0, -1);
  const cut = Math.max(prefix.lastIndexOf('-'), prefix.lastIndexOf('.'), prefix.lastIndexOf('_'));
  return cut >= 0 ? prefix.slice(0, cut + 1) : '';
}
