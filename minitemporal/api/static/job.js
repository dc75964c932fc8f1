// The job page (#/jobs/<id>): summary, the DAG, a node's details, cancel, live updates.

import { authHeaders, jobUrl, request } from "./api.js";
import { drawDag } from "./dag.js";
import { el, fill, svg } from "./dom.js";
import {
  NODE_STATES,
  TERMINAL_JOB,
  formatBytes,
  formatDuration,
  formatTime,
  span,
  stateLabel,
} from "./format.js";
import { followEvents } from "./sse.js";

const LIVE_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  ended: "Finished: no more updates",
  off: "Not live",
};

export function badge(state, attrs = {}) {
  return el("span", { class: `badge state-${state}`, "data-state": state, ...attrs }, stateLabel(state));
}

export function countChips(counts) {
  return NODE_STATES.filter((s) => counts && counts[s]).map((s) =>
    el("span", { class: `chip state-${s}`, "data-state": s }, `${counts[s]} ${stateLabel(s)}`),
  );
}

function legend() {
  return el(
    "ul",
    { class: "legend", "data-testid": "legend", "aria-label": "Node states" },
    NODE_STATES.map((s) => el("li", {}, el("span", { class: `swatch state-${s}` }), stateLabel(s))),
  );
}

function field(label, value, attrs = {}) {
  return [el("dt", {}, label), el("dd", attrs, value)];
}

function outputBlock(label, output, testid) {
  if (!output) return null;
  const note = output.truncated
    ? `truncated: the last ${formatBytes(new TextEncoder().encode(output.tail).length)} of ${formatBytes(output.total_bytes)}`
    : formatBytes(output.total_bytes);
  return el(
    "div",
    { class: "output" },
    el("div", { class: "output-head" }, el("span", { class: "output-label" }, label), el("span", { class: "muted" }, note)),
    output.tail
      ? el("pre", { class: `output-text ${testid}`, "data-testid": testid, tabindex: 0 }, output.tail)
      : el("p", { class: "muted empty-output", "data-testid": testid }, "(empty)"),
  );
}

function attemptBlock(a, { open, running, heading }) {
  const dur = span(a.started_at, a.finished_at, running);
  const wait = span(a.enqueued_at, a.started_at);
  const exited = a.exit_code !== null && a.exit_code !== undefined;
  const summaryParts = [heading || `Attempt ${a.attempt}`];
  if (a.reason && !(a.reason === "exit_code" && exited)) summaryParts.push(stateLabel(a.reason));
  else if (!a.reason) summaryParts.push(running ? "running" : "—");
  if (exited) summaryParts.push(`exit ${a.exit_code}`);
  if (dur !== null) summaryParts.push(formatDuration(dur));
  const details = el(
    "details",
    { class: "attempt", "data-testid": "attempt", "data-attempt": a.attempt, open },
    el("summary", {}, summaryParts.join(" · ")),
    el(
      "dl",
      { class: "fields" },
      field("Worker", a.worker_id || "—", { "data-testid": "attempt-worker" }),
      field("Enqueued", formatTime(a.enqueued_at, { millis: true })),
      field("Started", formatTime(a.started_at, { millis: true })),
      field("Finished", formatTime(a.finished_at, { millis: true })),
      field("Queue wait", formatDuration(wait)),
      field("Duration", formatDuration(dur)),
      field("Exit code", a.exit_code ?? "—", { "data-testid": "attempt-exit-code" }),
      field("Reason", a.reason ? stateLabel(a.reason) : running ? "(running)" : "—", {
        "data-testid": "attempt-reason",
      }),
    ),
    outputBlock("stdout", a.stdout, "stdout"),
    outputBlock("stderr", a.stderr, "stderr"),
  );
  return details;
}

export function mountJob(root, jobId, ctx) {
  let job = null;
  let dag = null;
  let selected = null;
  let stream = null;
  let disposed = false;
  const openAttempts = new Map(); // node id -> attempt numbers the user opened or closed

  const nameEl = el("h1", { class: "job-title", "data-testid": "job-name" }, "Job");
  const statusEl = el("span", { "data-testid": "job-status" });
  const countsEl = el("div", { class: "chips", "data-testid": "job-counts" });
  const createdEl = el("span", { "data-testid": "job-created" });
  const durationEl = el("span", { "data-testid": "job-duration" });
  const liveEl = el("span", { class: "live", "data-testid": "live-indicator", "data-live": "connecting", role: "status" });
  const cancelBtn = el(
    "button",
    { type: "button", class: "button danger", "data-testid": "cancel-job", disabled: true, onclick: cancel },
    "Cancel job",
  );
  const messageEl = el("p", { class: "message", "data-testid": "job-message", role: "alert", hidden: true });
  const svgEl = svg("svg", { class: "dag", "data-testid": "dag", role: "group", "aria-label": "Nodes and their dependencies" });
  const panel = el("aside", { class: "node-panel", "data-testid": "node-panel", hidden: true });
  const zoomLabel = el("span", { class: "zoom-label", "data-testid": "zoom-level" }, "100%");
  const zoom = (factor) => {
    if (dag) zoomLabel.textContent = `${Math.round(dag.zoom(factor) * 100)}%`;
  };

  const body = el(
    "div",
    { class: "job-body" },
    el(
      "section",
      { class: "card dag-card" },
      el(
        "div",
        { class: "dag-toolbar" },
        legend(),
        el(
          "div",
          { class: "zoom", role: "group", "aria-label": "Zoom" },
          el("button", { type: "button", class: "button subtle", "data-testid": "zoom-out", title: "Zoom out", onclick: () => zoom(1 / 1.25) }, "−"),
          zoomLabel,
          el("button", { type: "button", class: "button subtle", "data-testid": "zoom-in", title: "Zoom in", onclick: () => zoom(1.25) }, "+"),
          el("button", { type: "button", class: "button subtle", "data-testid": "zoom-reset", onclick: () => zoom(null) }, "Reset"),
        ),
      ),
      el("div", { class: "dag-scroll", "data-testid": "dag-scroll" }, svgEl),
      el("p", { class: "hint muted" }, "Click a node for its command, attempts and output."),
    ),
    panel,
  );

  fill(
    root,
    el(
      "section",
      { class: "job-head" },
      el("a", { class: "back", href: "#/", "data-testid": "back" }, "← All jobs"),
      el(
        "div",
        { class: "job-head-row" },
        el("div", { class: "job-head-title" }, nameEl, statusEl),
        el("div", { class: "job-head-actions" }, liveEl, cancelBtn),
      ),
      el(
        "div",
        { class: "job-meta muted" },
        el("code", { class: "job-id", "data-testid": "job-id" }, jobId),
        el("span", {}, "Created ", createdEl),
        el("span", {}, "Duration ", durationEl),
      ),
      countsEl,
      messageEl,
    ),
    body,
  );
  body.hidden = true;

  function message(text, kind = "error") {
    messageEl.hidden = !text;
    messageEl.className = `message ${kind}`;
    messageEl.textContent = text || "";
  }

  function setLive(status, delay) {
    if (disposed) return;
    liveEl.setAttribute("data-live", status);
    let text = LIVE_TEXT[status] || status;
    if (status === "reconnecting" && delay) text = `Reconnecting in ${Math.ceil(delay / 1000)} s…`;
    liveEl.textContent = text;
  }

  function renderHeader() {
    nameEl.textContent = job.name;
    document.title = `${job.name} · minitemporal`;
    fill(statusEl, badge(job.status, { "data-testid": "job-status-badge" }));
    statusEl.setAttribute("data-status", job.status);
    fill(countsEl, el("span", { class: "muted" }, `${job.nodes_total} nodes`), ...countChips(job.node_counts));
    createdEl.textContent = formatTime(job.created_at);
    createdEl.title = job.created_at || "";
    tick();
    const finished = TERMINAL_JOB.has(job.status);
    cancelBtn.disabled = finished || job.cancel_requested;
    cancelBtn.textContent = job.cancel_requested && !finished ? "Cancelling…" : "Cancel job";
  }

  function tick() {
    if (job) durationEl.textContent = formatDuration(span(job.created_at, job.finished_at, job.status === "running"));
  }
  const ticker = setInterval(tick, 1000);

  function nodeById(id) {
    return job && job.nodes.find((n) => n.id === id);
  }

  function select(id) {
    selected = id;
    if (dag) dag.select(id);
    renderPanel();
  }

  function renderPanel() {
    const node = selected && nodeById(selected);
    panel.hidden = !node;
    if (!node) return;
    panel.setAttribute("data-node-id", node.id);
    const remembered = openAttempts.get(node.id) || new Map();
    openAttempts.set(node.id, remembered);
    const last = node.attempts.length ? node.attempts[node.attempts.length - 1].attempt : null;
    const attempts = node.attempts.map((a) => {
      const block = attemptBlock(a, {
        open: remembered.has(a.attempt) ? remembered.get(a.attempt) : a.attempt === last,
        running: node.state === "running" && a.attempt === last && !a.finished_at,
      });
      block.addEventListener("toggle", () => remembered.set(a.attempt, block.open));
      return block;
    });
    const name = node.name && node.name !== node.id ? el("p", { class: "muted node-name" }, node.name) : null;
    fill(
      panel,
      el(
        "div",
        { class: "panel-head" },
        el("h2", { "data-testid": "node-title" }, node.id),
        badge(node.state, { "data-testid": "node-state" }),
        el("button", { type: "button", class: "button subtle close", "data-testid": "node-close", "aria-label": "Close", onclick: () => select(null) }, "×"),
      ),
      name,
      node.explanation ? el("p", { class: "explanation", "data-testid": "node-explanation" }, node.explanation) : null,
      el("h3", {}, "Command"),
      el("pre", { class: "command", "data-testid": "node-command" }, node.command),
      el(
        "dl",
        { class: "fields" },
        field("Depends on", node.depends_on.length ? node.depends_on.join(", ") : "—"),
        field("Retries", `${node.retries} (attempt ${node.attempt || 0} of ${node.retries + 1})`),
        field("Timeout", node.timeout_seconds ? `${node.timeout_seconds} s` : "none"),
        node.idempotency_key ? field("Idempotency key", node.idempotency_key) : null,
        node.state === "retry_wait" ? field("Next attempt", formatTime(node.next_attempt_at, { millis: true })) : null,
      ),
      el("h3", {}, `Attempts (${node.attempts.length})`),
      attempts.length ? el("div", { class: "attempts" }, attempts.reverse()) : null,
      !attempts.length && !node.cached_result ? el("p", { class: "muted", "data-testid": "no-attempts" }, "No attempt yet.") : null,
      node.cached_result
        ? el(
            "div",
            { class: "cached" },
            el("p", { class: "muted" }, "Not run again: an earlier run with the same idempotency key succeeded. Its result:"),
            attemptBlock(node.cached_result, { open: true, running: false, heading: "Earlier run" }),
          )
        : null,
    );
  }

  function sameShape(a, b) {
    if (!a || a.nodes.length !== b.nodes.length) return false;
    const ids = new Set(a.nodes.map((n) => n.id));
    return b.nodes.every((n) => ids.has(n.id));
  }

  function applySnapshot(snapshot) {
    const keep = sameShape(job, snapshot);
    job = snapshot;
    body.hidden = false;
    if (!keep || !dag) {
      dag = drawDag(svgEl, job.nodes, { onSelect: (id) => select(id === selected ? null : id) });
      zoomLabel.textContent = "100%";
    } else {
      job.nodes.forEach((n) => dag.update(n));
    }
    if (selected && !nodeById(selected)) selected = null;
    dag.select(selected);
    renderHeader();
    renderPanel();
  }

  function applyNode(node) {
    if (!job) return;
    const { job_id: _, ...clean } = node;
    const i = job.nodes.findIndex((n) => n.id === clean.id);
    if (i < 0) return;
    job.nodes[i] = clean;
    dag.update(clean);
    if (selected === clean.id) renderPanel();
  }

  function applySummary(summary) {
    if (!job) return;
    const { nodes: _, ...rest } = summary;
    job = { ...job, ...rest };
    renderHeader();
  }

  function onEvent(name, data) {
    if (disposed) return;
    if (name === "snapshot") applySnapshot(data);
    else if (name === "node") applyNode(data);
    else if (name === "job" || name === "end") applySummary(data);
  }

  async function cancel() {
    if (!job || !window.confirm(`Cancel job "${job.name}"? Waiting nodes are cancelled and running commands are killed.`)) return;
    cancelBtn.disabled = true;
    message(null);
    try {
      const result = await request(jobUrl(jobId, "/cancel"), { method: "POST" });
      if (disposed) return;
      if (result.nodes && result.nodes.length) applySnapshot(result);
      else applySummary(result);
      message("Cancellation requested.", "info");
    } catch (err) {
      if (disposed) return;
      if (err.status === 403) {
        message("This token lacks the submit scope: it can read jobs but not cancel them. Forget it and enter a token with the submit scope.");
      } else if (err.status === 401) {
        ctx.needToken(err.message);
        return;
      } else if (err.status === 409) {
        message(`Not cancelled: ${err.message}`);
      } else {
        message(`Could not cancel: ${err.message}`);
      }
      if (job) renderHeader();
    }
  }

  function startStream() {
    stream = followEvents(jobUrl(jobId, "/events"), {
      headers: authHeaders,
      onEvent,
      onStatus: setLive,
      onFatal: (err) => {
        if (disposed) return;
        if (err.needsToken) ctx.needToken(err.message);
        else {
          setLive("off");
          message(`Live updates stopped: ${err.message}`);
        }
      },
    });
  }

  async function load() {
    setLive("connecting");
    try {
      const first = await request(jobUrl(jobId));
      if (disposed) return;
      applySnapshot(first);
    } catch (err) {
      if (disposed) return;
      if (err.needsToken) {
        ctx.needToken(err.message);
        return;
      }
      setLive("off");
      nameEl.textContent = err.status === 404 ? "No such job" : "Could not load the job";
      message(err.message);
      return;
    }
    if (TERMINAL_JOB.has(job.status)) setLive("ended");
    else startStream();
  }

  load();
  return {
    dispose() {
      disposed = true;
      clearInterval(ticker);
      if (stream) stream.close();
    },
  };
}
