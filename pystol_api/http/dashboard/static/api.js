// The dashboard's only way out: the project's own HTTP API, with the signed-in token.
const KEY = "pystol.token";

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export function headers(extra = {}) {
  return { Authorization: `Bearer ${token.get() || ""}`, ...extra };
}

// One API call; JSON in and out; an ApiError (with the problem document) on any 4xx/5xx.
// `options.etag` (a poll's last ETag, or null for none yet) makes it a conditional GET:
// the answer is `{ notModified: true }` on 304, else `{ data, text, etag }`.
export async function api(method, path, body, options = {}) {
  const init = { method, headers: headers(options.headers || {}), signal: options.signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const conditional = options.etag !== undefined;
  if (conditional) {
    // The tag is sent by hand and the browser's cache kept out ("no-store"): a 304 then
    // reaches this code as a 304 (with "no-cache" the browser would revalidate with its
    // own copy and hand back a 200 with the old body, to be parsed again every second).
    init.cache = "no-store";
    if (options.etag) init.headers["If-None-Match"] = options.etag;
  }
  const response = await fetch("/api/v1" + path, init);
  if (response.status === 401 && !options.noSignOut) {
    window.dispatchEvent(new CustomEvent("pystol:unauthorized"));
  }
  if (response.status === 304 && conditional) return { notModified: true };
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    // A refusal is told to the user (the problem's detail), wherever it came from.
    if (response.status === 403) {
      window.dispatchEvent(new CustomEvent("pystol:forbidden", { detail: error }));
    }
    throw error;
  }
  if (conditional) return { data, text, etag: response.headers.get("ETag") };
  return options.raw ? { data, text } : data;
}

// The job's timeline as server-sent events over fetch() (EventSource cannot send an
// Authorization header). Calls onEvent(kind, data) per event; resolves with
// "ended" | "closed" | "unsupported" (the server answered 406 or not a stream).
export async function streamEvents(jobId, from, onEvent, signal) {
  const hdrs = headers({ Accept: "text/event-stream" });
  if (from > 0) hdrs["Last-Event-ID"] = String(from - 1);
  const response = await fetch(`/api/v1/jobs/${encodeURIComponent(jobId)}/events`,
    { headers: hdrs, signal });
  const type = response.headers.get("Content-Type") || "";
  if (response.status === 406 || !response.ok || !type.startsWith("text/event-stream")) {
    if (response.body) response.body.cancel().catch(() => {});
    return "unsupported";
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return "closed";
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let kind = "message"; let id = null; const lines = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") kind = val;
        else if (field === "data") lines.push(val);
        else if (field === "id") id = val;
      }
      if (!lines.length) continue;
      let data = lines.join("\n");
      try { data = JSON.parse(data); } catch { /* keep the text */ }
      onEvent(kind, data, id);
      if (kind === "end") { reader.cancel().catch(() => {}); return "ended"; }
    }
  }
}
