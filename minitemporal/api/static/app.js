// The dashboard's entry point: hash routing (#/, #/?status=..., #/jobs/<id>) and the token.

import { token } from "./api.js";
import { el, fill } from "./dom.js";
import { mountJob } from "./job.js";
import { mountJobs } from "./jobs.js";

const view = document.getElementById("view");
const tokenState = document.getElementById("token-state");
const forgetButton = document.getElementById("forget-token");
let current = null;

function showTokenState() {
  const has = Boolean(token.get());
  tokenState.hidden = !has;
  forgetButton.hidden = !has;
}

function mount(factory) {
  if (current) current.dispose();
  current = null;
  current = factory();
  showTokenState();
}

/** The token form; `reason` is the server's word on why (missing, unknown, lacking a scope). */
function mountAuth(root, reason) {
  const input = el("input", {
    id: "token-input",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "data-testid": "token-input",
  });
  const had = Boolean(token.get());
  const messageEl = el("p", { class: `message ${had ? "error" : "info"}`, "data-testid": "auth-message", role: "alert" });
  messageEl.textContent = had ? `The token was refused: ${reason}` : "This server needs an API token.";
  const form = el(
    "form",
    {
      class: "card auth",
      "data-testid": "auth-form",
      onsubmit: (e) => {
        e.preventDefault();
        const value = input.value.trim();
        if (!/^[\x21-\x7e]+$/.test(value)) {
          messageEl.className = "message error";
          messageEl.textContent = "A token is printable characters without spaces.";
          return;
        }
        token.set(value);
        route();
      },
    },
    el("h1", {}, "API token"),
    messageEl,
    el(
      "p",
      { class: "muted" },
      "Enter a token with the read scope (and submit, to cancel jobs), as made by ",
      el("code", {}, "minitemporal token create"),
      ". It is kept in this tab only (session storage) and sent in the Authorization header.",
    ),
    el("label", { for: "token-input" }, "Token"),
    input,
    el("div", { class: "actions" }, el("button", { type: "submit", class: "button primary", "data-testid": "token-submit" }, "Continue")),
  );
  fill(root, form);
  token.clear();
  input.focus();
  return { dispose() {} };
}

const ctx = {
  needToken(reason) {
    mount(() => mountAuth(view, reason));
  },
};

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  const job = path.match(/^\/jobs\/([^/]+)$/);
  if (job) {
    let id;
    try {
      id = decodeURIComponent(job[1]);
    } catch {
      id = job[1];
    }
    mount(() => mountJob(view, id, ctx));
  } else {
    mount(() => mountJobs(view, ctx, params));
  }
}

forgetButton.addEventListener("click", () => {
  token.clear();
  route();
});
window.addEventListener("hashchange", route);
route();
