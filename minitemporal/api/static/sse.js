// Server-sent events over fetch(). EventSource cannot send an Authorization header, so the
// page reads the text/event-stream body itself: a small parser of the WHATWG format, and a
// connection that reconnects with backoff until the server sends `end`.

import { errorOf } from "./api.js";

/**
 * Incremental text/event-stream parser. push() takes text in chunks of any size (a line or
 * a CRLF may be split across chunks); onEvent gets {event, data, id} for each complete event,
 * onRetry the server's reconnection delay in ms, onComment each `:` line.
 */
export class EventStreamParser {
  constructor({ onEvent, onRetry = () => {}, onComment = () => {} }) {
    this.onEvent = onEvent;
    this.onRetry = onRetry;
    this.onComment = onComment;
    this.buffer = "";
    this.skipLF = false;
    this.reset();
  }

  reset() {
    this.event = "";
    this.data = [];
    this.hasData = false;
  }

  push(text) {
    let chunk = text;
    if (this.skipLF && chunk.startsWith("\n")) chunk = chunk.slice(1);
    this.skipLF = false;
    this.buffer += chunk;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (c !== "\n" && c !== "\r") continue;
      const line = this.buffer.slice(start, i);
      if (c === "\r") {
        if (i + 1 < this.buffer.length) {
          if (this.buffer[i + 1] === "\n") i++;
        } else {
          this.skipLF = true; // a CR ending the chunk: an LF starting the next is the same break
        }
      }
      start = i + 1;
      this.line(line);
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") {
      if (this.hasData) {
        this.onEvent({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) {
      this.onComment(line.slice(1).trimStart());
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") {
      this.data.push(value);
      this.hasData = true;
    } else if (field === "id" && !value.includes("\0")) this.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.onRetry(Number(value));
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

/**
 * Follow an event stream until an `end` event or close().
 *
 * onEvent(name, data) gets each event with its JSON parsed; onStatus(status, detail) hears
 * "connecting", "live", "reconnecting" (detail: the delay in ms), "ended"; onFatal(error) an
 * ApiError that retrying cannot fix (401, 403, 404), after which the stream stops.
 * A stream that ends or falls silent (no event and no keepalive for `silenceMs`) before
 * `end` is reopened after the server's `retry` delay, doubled after each failure up to 30 s,
 * with jitter; a fresh `snapshot` resets the backoff.
 */
export function followEvents(url, { headers, onEvent, onStatus, onFatal, silenceMs = 45000 }) {
  const closed = new AbortController();
  let retryMs = 2000;
  let failures = 0;
  let ended = false;

  async function connectOnce() {
    const attempt = new AbortController();
    const stop = () => attempt.abort();
    closed.signal.addEventListener("abort", stop);
    let watchdog = null;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(stop, silenceMs);
    };
    try {
      arm();
      const response = await fetch(url, {
        headers: { Accept: "text/event-stream", ...headers() },
        signal: attempt.signal,
        cache: "no-store",
        credentials: "omit",
      });
      if (!response.ok) throw await errorOf(response);
      const type = response.headers.get("Content-Type") || "";
      if (!type.startsWith("text/event-stream")) throw new Error(`unexpected ${type}`);
      const parser = new EventStreamParser({
        onRetry: (ms) => (retryMs = Math.max(250, ms)),
        onEvent: ({ event, data }) => {
          let parsed;
          try {
            parsed = JSON.parse(data);
          } catch {
            return; // not ours: ignore rather than break the page
          }
          if (event === "snapshot") {
            failures = 0;
            onStatus("live");
          }
          if (event === "end") ended = true;
          onEvent(event, parsed);
        },
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        arm();
        parser.push(value);
        if (ended) {
          reader.cancel().catch(() => {});
          break;
        }
      }
    } finally {
      clearTimeout(watchdog);
      closed.signal.removeEventListener("abort", stop);
    }
  }

  async function run() {
    onStatus("connecting");
    while (!closed.signal.aborted && !ended) {
      try {
        await connectOnce();
      } catch (err) {
        if (closed.signal.aborted) return;
        if (err && [401, 403, 404].includes(err.status)) {
          onFatal(err);
          return;
        }
      }
      if (ended || closed.signal.aborted) break;
      failures += 1;
      const backoff = Math.min(30000, retryMs * 2 ** (failures - 1));
      const delay = Math.round(backoff * (0.75 + Math.random() * 0.5));
      onStatus("reconnecting", delay);
      await sleep(delay, closed.signal);
    }
    if (ended) onStatus("ended");
  }

  run();
  return { close: () => closed.abort() };
}
