// The job list (#/ and #/?status=<status>): newest first, paged, refreshed while visible.

import { request } from "./api.js";
import { el, fill, svg } from "./dom.js";
import { JOB_STATUSES, formatDuration, formatTime, span, stateLabel } from "./format.js";
import { badge } from "./job.js";

const PAGE = 50;
const MAX_PAGE = 500; // the api's largest page
export const REFRESH_MS = 3000;
// Finished work first, then work in progress, then work not started.
const BAR_ORDER = ["succeeded", "failed", "upstream_failed", "cancelled", "running", "retry_wait", "queued", "pending"];

function progress(job) {
  // A bar of the nodes by state: SVG attributes, since the page allows no inline style.
  const width = 96;
  const total = job.nodes_total || 1;
  let x = 0;
  const parts = [];
  for (const s of BAR_ORDER) {
    const n = (job.node_counts && job.node_counts[s]) || 0;
    if (!n) continue;
    const w = (n / total) * width;
    parts.push(svg("rect", { class: `bar state-${s}`, x, y: 0, width: w, height: 8 }));
    x += w;
  }
  return svg("svg", { class: "progress", width, height: 8, viewBox: `0 0 ${width} 8`, "aria-hidden": "true" }, svg("rect", { class: "bar-bg", width, height: 8, rx: 4 }), parts);
}

function countsSummary(job) {
  const c = job.node_counts || {};
  const done = c.succeeded || 0;
  const extra = ["running", "failed", "upstream_failed", "cancelled"]
    .filter((s) => c[s])
    .map((s) => `${c[s]} ${stateLabel(s)}`);
  return [`${done}/${job.nodes_total} succeeded`, ...extra].join(" · ");
}

export function mountJobs(root, ctx, params) {
  const wanted = params.get("status");
  const status = JOB_STATUSES.includes(wanted) ? wanted : "";
  let jobs = [];
  let cursor = null;
  let disposed = false;
  let inFlight = null;
  let updatedAt = null;

  const tbody = el("tbody", { "data-testid": "job-rows" });
  const moreBtn = el("button", { type: "button", class: "button", "data-testid": "jobs-more", hidden: true, onclick: more }, "Load more");
  const errorEl = el("p", { class: "message error", "data-testid": "jobs-error", role: "alert", hidden: true });
  const noteEl = el("span", { class: "refresh-note muted", "data-testid": "refresh-note" });

  const filters = el(
    "nav",
    { class: "filters", "aria-label": "Filter by status", "data-testid": "status-filter" },
    ["", ...JOB_STATUSES].map((s) =>
      el(
        "a",
        {
          href: s ? `#/?status=${s}` : "#/",
          class: `filter${s === status ? " active" : ""}`,
          "aria-current": s === status ? "page" : null,
          "data-testid": `filter-${s || "all"}`,
        },
        s ? stateLabel(s) : "all",
      ),
    ),
  );

  fill(
    root,
    el(
      "section",
      { class: "list-head" },
      el("div", { class: "list-title" }, el("h1", {}, "Jobs"), noteEl),
      filters,
    ),
    errorEl,
    el(
      "div",
      { class: "card table-card" },
      el(
        "table",
        { class: "jobs", "data-testid": "jobs-table" },
        el(
          "thead",
          {},
          el("tr", {}, ["Name", "ID", "Status", "Nodes", "Created", "Duration"].map((h) => el("th", { scope: "col" }, h))),
        ),
        tbody,
      ),
    ),
    el("div", { class: "more" }, moreBtn),
  );

  function note() {
    const visible = document.visibilityState === "visible";
    const when = updatedAt ? ` · updated ${formatTime(updatedAt.toISOString())}` : "";
    noteEl.textContent = visible
      ? `Live: refreshes every ${REFRESH_MS / 1000} s while this tab is visible${when}`
      : `Paused while this tab is hidden${when}`;
    noteEl.setAttribute("data-live", visible ? "live" : "paused");
  }

  function row(job) {
    const href = `#/jobs/${encodeURIComponent(job.id)}`;
    const running = job.status === "running";
    return el(
      "tr",
      {
        "data-testid": "job-row",
        "data-job-id": job.id,
        "data-status": job.status,
        class: "clickable",
        onclick: (e) => {
          if (!(e.target instanceof Element && e.target.closest("a"))) location.hash = href;
        },
      },
      el("td", { class: "name" }, el("a", { href, "data-testid": "job-link" }, job.name)),
      el("td", {}, el("code", { class: "short-id", title: job.id }, job.id.slice(0, 8))),
      el("td", {}, badge(job.status)),
      el("td", {}, el("div", { class: "counts" }, progress(job), el("span", { class: "muted" }, countsSummary(job)))),
      el("td", { title: job.created_at || "" }, formatTime(job.created_at)),
      el("td", {}, formatDuration(span(job.created_at, job.finished_at, running))),
    );
  }

  function render() {
    const rows = jobs.map(row);
    if (!rows.length) {
      const text = status ? `No ${stateLabel(status)} jobs.` : "No jobs yet. Submit one with POST /v1/jobs.";
      rows.push(el("tr", {}, el("td", { colspan: 6, class: "empty muted", "data-testid": "jobs-empty" }, text)));
    }
    fill(tbody, rows);
    moreBtn.hidden = !cursor;
    note();
  }

  async function fetchPage(after, limit) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (status) query.set("status", status);
    if (after) query.set("cursor", after);
    return request(`/v1/jobs?${query}`);
  }

  async function guarded(work) {
    if (inFlight) return inFlight;
    inFlight = (async () => {
      try {
        await work();
        if (disposed) return;
        errorEl.hidden = true;
        updatedAt = new Date();
        render();
      } catch (err) {
        if (disposed) return;
        if (err.needsToken) {
          ctx.needToken(err.message);
          return;
        }
        errorEl.hidden = false;
        errorEl.textContent = `Could not load jobs: ${err.message}`;
      } finally {
        inFlight = null;
      }
    })();
    return inFlight;
  }

  function refresh() {
    return guarded(async () => {
      // The rows already shown, fetched again in one page (beyond the largest page, the
      // first page is refreshed and older rows kept as they were).
      const page = await fetchPage(null, Math.min(MAX_PAGE, Math.max(PAGE, jobs.length)));
      if (disposed) return;
      if (jobs.length <= MAX_PAGE) {
        jobs = page.jobs;
        cursor = page.next_cursor;
      } else {
        const fresh = new Set(page.jobs.map((j) => j.id));
        jobs = [...page.jobs, ...jobs.slice(page.jobs.length).filter((j) => !fresh.has(j.id))];
      }
    });
  }

  function more() {
    return guarded(async () => {
      const page = await fetchPage(cursor, PAGE);
      if (disposed) return;
      const seen = new Set(jobs.map((j) => j.id));
      jobs = jobs.concat(page.jobs.filter((j) => !seen.has(j.id)));
      cursor = page.next_cursor;
    });
  }

  const timer = setInterval(() => {
    if (document.visibilityState === "visible") refresh();
  }, REFRESH_MS);
  const onVisibility = () => {
    note();
    if (document.visibilityState === "visible") refresh();
  };
  document.addEventListener("visibilitychange", onVisibility);
  document.title = "Jobs · minitemporal";
  note();
  refresh();

  return {
    dispose() {
      disposed = true;
      clearInterval(timer);
      document.removeEventListener("visibilitychange", onVisibility);
    },
  };
}
