// Formatting of states, times and sizes for display.

export const JOB_STATUSES = ["running", "succeeded", "failed", "cancelled"];
export const NODE_STATES = [
  "pending",
  "queued",
  "running",
  "retry_wait",
  "succeeded",
  "failed",
  "upstream_failed",
  "cancelled",
];
export const TERMINAL_JOB = new Set(["succeeded", "failed", "cancelled"]);

export function stateLabel(state) {
  return String(state || "unknown").replace(/_/g, " ");
}

function parse(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** 2024-05-01 13:04:05 in local time (the day left out when it is today). */
export function formatTime(iso, { millis = false } = {}) {
  const t = parse(iso);
  if (t === null) return "—";
  const d = new Date(t);
  let clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (millis) clock += `.${pad(d.getMilliseconds(), 3)}`;
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return clock;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock}`;
}

/** Milliseconds as "850 ms", "4.2 s", "3 m 05 s", "2 h 03 m". */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ${pad(Math.floor(s % 60))} s`;
  return `${Math.floor(m / 60)} h ${pad(m % 60)} m`;
}

/** The time between two ISO instants; `to` missing means "until now" when `running`. */
export function span(fromIso, toIso, running = false) {
  const from = parse(fromIso);
  if (from === null) return null;
  const to = parse(toIso);
  if (to !== null) return to - from;
  return running ? Date.now() - from : null;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** "3 succeeded · 1 running" from a node_counts object, in state order. */
export function countsText(counts, total) {
  const parts = NODE_STATES.filter((s) => counts && counts[s]).map(
    (s) => `${counts[s]} ${stateLabel(s)}`,
  );
  const text = parts.join(" · ");
  return total !== undefined ? `${total} node${total === 1 ? "" : "s"}${text ? ": " + text : ""}` : text;
}
