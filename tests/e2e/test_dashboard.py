"""The web dashboard, in headless Chromium driven by Playwright, against real systems.

What a user sees must follow what runs: SVG nodes change state on screen while the page stays
loaded (live events), the list filters and refreshes, a node shows its output, the cancel
button cancels, a token is asked for and kept in the tab. Every browser test fails on a
console error or a Content-Security-Policy violation, and leaves a screenshot in
test-results/ at the repository root.

Chromium comes from the system (Debian's `chromium`), never from `playwright install`. Without
it these tests skip, saying so, unless MINITEMPORAL_TEST_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from minitemporal.api.dashboard import ASSETS, CONTENT_SECURITY_POLICY, INDEX
from tests.e2e.conftest import start_topology, topology_cluster
from tests.support.api import Api, node
from tests.support.procs import ROOT, Cluster, Proc
from tests.support.security import token
from tests.support.services import REQUIRE_ENV, free_port
from tests.support.topology import wait_for

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # part of the test extra; the browser fixture says what is missing
    expect = sync_playwright = None

CHROMIUM = Path(os.environ.get("MINITEMPORAL_TEST_CHROMIUM", "/usr/bin/chromium"))
RESULTS = ROOT / "test-results"
STATIC = ROOT / "minitemporal" / "api" / "static"
# A browser's own report of a failed fetch; expected where a test provokes a 401 or a 403.
REFUSED = re.compile(r"Failed to load resource: the server responded with a status of 40[13]")


@dataclass
class Dash:
    """A running system the dashboard talks to."""

    url: str
    api: Api
    topology: str
    cluster: Cluster


@pytest.fixture(scope="module", params=["embedded", "all"])
def dash(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dash]:
    topology = request.param
    tmp = tmp_path_factory.mktemp(f"dash-{topology}")
    with topology_cluster(request, topology, tmp) as cluster:
        try:
            url = start_topology(cluster, topology)
            api = Api(url)
            yield Dash(url, api, topology, cluster)
            api.close()
        finally:
            cluster.stop_all()
            for p in cluster.procs:
                assert all(code == 0 for code in p.exit_codes), (p.name, p.exit_codes, p.log())


def _need_chromium() -> None:
    missing = None
    if sync_playwright is None:
        missing = "Playwright for Python is not installed (pip install '.[test]')"
    elif not CHROMIUM.exists():
        missing = f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    if missing:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{missing}; {REQUIRE_ENV}=1 forbids skipping", pytrace=False)
        pytest.skip(f"dashboard browser tests: {missing}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need_chromium()
    assert expect is not None and sync_playwright is not None
    expect.set_options(timeout=20_000)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


# Content-Security-Policy violations, recorded by the page itself (Playwright's own scripts
# are injected past the policy).
_RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@dataclass
class Watched:
    """A page whose console errors, uncaught exceptions and CSP violations are collected."""

    page: Any
    messages: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: re.Pattern[str]) -> None:
        self.allowed.append(pattern)

    def problems(self) -> list[str]:
        found = [m for m in self.messages if not any(a.search(m) for a in self.allowed)]
        try:
            found += [f"CSP violation: {v}" for v in self.page.evaluate("window.__cspViolations")]
        except Exception as exc:  # a page that crashed is a problem too
            found.append(f"page not readable: {exc}")
        return found

    def shot(self, name: str) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{name}.png"
        self.page.evaluate("window.scrollTo(0, 0)")  # a sticky header stays on top
        self.page.screenshot(path=path, full_page=True)
        return path


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_init_script(_RECORD_VIOLATIONS)
    p = context.new_page()
    watched = Watched(p)
    p.on(
        "console",
        lambda m: m.type in ("error", "warning") and watched.messages.append(f"{m.type}: {m.text}"),
    )
    p.on("pageerror", lambda e: watched.messages.append(f"uncaught: {e}"))
    yield watched
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    try:
        watched.shot(name)
        problems = watched.problems()
    finally:
        context.close()
    assert not problems, problems


def _node(page: Any, node_id: str) -> Any:
    return page.locator(f'[data-testid="dag"] [data-node-id="{node_id}"]')


# ---------------------------------------------------------------------------------------------
# The files: no browser needed.


def test_files_are_served_with_strict_headers_and_revalidation(dash: Dash) -> None:
    index = httpx.get(dash.url + "/", timeout=10)
    assert index.status_code == 200
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    for directive in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"):
        assert directive in CONTENT_SECURITY_POLICY
    assert index.headers["x-content-type-options"] == "nosniff"
    assert index.headers["referrer-policy"] == "no-referrer"
    assert index.headers["cache-control"] == "no-cache"
    again = httpx.get(dash.url + "/", headers={"If-None-Match": index.headers["etag"]}, timeout=10)
    assert again.status_code == 304 and again.content == b""
    head = httpx.head(dash.url + "/", timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == index.headers["etag"]
    assert head.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert httpx.head(dash.url + "/ui/nothing.js", timeout=10).status_code == 404

    for name, content_type in ASSETS.items():
        if name == INDEX:
            continue
        r = httpx.get(f"{dash.url}/ui/{name}", timeout=10)
        assert r.status_code == 200, name
        assert r.headers["content-type"] == content_type
        assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert r.content == (STATIC / name).read_bytes()

    for path in (
        "/ui/nothing.js",
        "/ui/index.html",
        "/ui/..%2Fdashboard.py",
        "/ui/%2e%2e%2f%2e%2e%2fapp.py",
        "/ui/../api/app.py",
        "/ui/",
        "/ui/app.js/x",
    ):
        r = httpx.get(dash.url + path, timeout=10)
        assert r.status_code == 404, (path, r.status_code)
        assert "def " not in r.text and "import" not in r.text


def test_every_static_file_is_listed_and_the_page_has_no_inline_code() -> None:
    on_disk = {p.name for p in STATIC.iterdir() if p.is_file()}
    assert on_disk == set(ASSETS), "list a new file in minitemporal/api/dashboard.py ASSETS"
    html = (STATIC / INDEX).read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="/ui/app.js">']
    assert "<style" not in html and " style=" not in html and " on" not in html.lower()
    for script in STATIC.glob("*.js"):
        text = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{script.name} uses {sink}"
        assert "localStorage" not in text and "document.cookie" not in text, script.name
    assert "static/*" in (ROOT / "setup.cfg").read_text(), "package data must ship the files"


# ---------------------------------------------------------------------------------------------
# In the browser.


def test_job_page_follows_a_running_dag_live(dash: Dash, page: Watched) -> None:
    tag = uuid.uuid4().hex[:6]
    job_id = dash.api.submit(
        {
            "name": f"live-chain-{tag}",
            "nodes": [
                node("a", "sleep 1.5; echo from-a"),
                node("b", "sleep 3; echo hello from b", ["a"]),
                node("c", "echo from-c", ["b"]),
            ],
        }
    )
    p = page.page
    p.goto(f"{dash.url}/#/jobs/{job_id}")
    p.evaluate("window.__sameDocument = true")
    expect(p.get_by_test_id("job-name")).to_have_text(f"live-chain-{tag}")
    expect(_node(p, "b")).to_have_attribute("data-state", "running")
    expect(_node(p, "c")).to_have_attribute("data-state", "pending")
    expect(p.get_by_test_id("live-indicator")).to_have_attribute("data-live", "live")
    expect(p.get_by_test_id("job-status")).to_have_attribute("data-status", "running")
    expect(p.get_by_test_id("cancel-job")).to_be_enabled()
    page.shot(f"dashboard-job-running-{dash.topology}")

    expect(_node(p, "b")).to_have_attribute("data-state", "succeeded")
    expect(_node(p, "c")).to_have_attribute("data-state", "succeeded")
    expect(p.get_by_test_id("job-status")).to_have_attribute("data-status", "succeeded")
    expect(p.get_by_test_id("job-counts")).to_contain_text("3 succeeded")
    expect(p.get_by_test_id("live-indicator")).to_have_attribute("data-live", "ended")
    expect(p.get_by_test_id("cancel-job")).to_be_disabled()
    assert p.evaluate("window.__sameDocument") is True, "the page was reloaded"
    # Three boxes, two arrows, laid out left to right.
    assert p.locator('[data-testid="dag"] .dag-edge').count() == 2
    xs = [_node(p, n).bounding_box()["x"] for n in "abc"]
    assert xs == sorted(xs) and len(set(xs)) == 3, xs

    _node(p, "b").click()
    panel = p.get_by_test_id("node-panel")
    expect(panel).to_be_visible()
    expect(panel.get_by_test_id("node-title")).to_have_text("b")
    expect(panel.get_by_test_id("node-state")).to_have_text("succeeded")
    expect(panel.get_by_test_id("node-command")).to_have_text("sleep 3; echo hello from b")
    expect(panel.get_by_test_id("stdout")).to_have_text("hello from b\n")
    expect(panel.get_by_test_id("attempt-exit-code")).to_have_text("0")
    expect(panel.get_by_test_id("attempt-worker")).not_to_have_text("—")
    page.shot(f"dashboard-job-page-{dash.topology}")


def test_a_failed_node_shows_its_error_and_why_the_rest_waits(dash: Dash, page: Watched) -> None:
    job_id = dash.api.submit(
        {
            "name": "with <b>a</b> failure",
            "nodes": [
                node("setup", "sleep 0.5; echo ready"),
                node("broken", "echo oops-on-stderr >&2; exit 3", ["setup"]),
                node("never", "echo never", ["broken"]),
                node("fine", "echo fine", ["setup"]),
            ],
        }
    )
    p = page.page
    p.goto(f"{dash.url}/#/jobs/{job_id}")
    expect(_node(p, "broken")).to_have_attribute("data-state", "failed")
    expect(_node(p, "never")).to_have_attribute("data-state", "upstream_failed")
    expect(_node(p, "fine")).to_have_attribute("data-state", "succeeded")
    expect(p.get_by_test_id("job-status")).to_have_attribute("data-status", "failed")
    # Markup in a name is text, never markup.
    expect(p.get_by_test_id("job-name")).to_have_text("with <b>a</b> failure")
    assert p.locator('[data-testid="job-name"] b').count() == 0

    _node(p, "broken").click()
    panel = p.get_by_test_id("node-panel")
    expect(panel.get_by_test_id("stderr")).to_have_text("oops-on-stderr\n")
    expect(panel.get_by_test_id("attempt-exit-code")).to_have_text("3")
    expect(panel.get_by_test_id("attempt-reason")).to_have_text("exit code")

    _node(p, "never").click()
    expect(panel.get_by_test_id("node-title")).to_have_text("never")
    expect(panel.get_by_test_id("node-explanation")).not_to_be_empty()
    expect(panel.get_by_test_id("no-attempts")).to_be_visible()


def test_job_list_pages_filters_refreshes_and_links(dash: Dash, page: Watched) -> None:
    tag = uuid.uuid4().hex[:6]
    slow = dash.api.submit({"name": f"list-slow-{tag}", "nodes": [node("wait", "sleep 60")]})
    quick = dash.api.submit({"name": f"list-quick-{tag}", "nodes": [node("one", "echo 1")]})
    dash.api.wait(quick)
    # More jobs than a page (50), all finished quickly.
    filler = [dash.api.submit({"name": f"filler-{i}", "nodes": [node("x")]}) for i in range(50)]
    for job_id in filler:
        dash.api.wait(job_id)

    p = page.page
    p.goto(dash.url + "/")
    rows = p.get_by_test_id("job-row")
    expect(rows).to_have_count(50)
    expect(p.get_by_test_id("refresh-note")).to_contain_text("every 3 s while this tab is visible")
    more = p.get_by_test_id("jobs-more")
    expect(more).to_be_visible()
    more.click()
    row = lambda job_id: p.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')  # noqa: E731
    expect(row(slow)).to_have_attribute("data-status", "running")
    expect(row(quick)).to_have_attribute("data-status", "succeeded")
    ids = rows.evaluate_all("rs => rs.map(r => r.dataset.jobId)")
    assert len(ids) == len(set(ids)) > 50
    assert ids.index(filler[-1]) < ids.index(quick) < ids.index(slow), "newest first"
    page.shot(f"dashboard-job-list-{dash.topology}")

    # The list on screen before a filter's answer arrives would pass a visibility check: wait
    # for every row to have the status filtered for.
    only = (
        "s => { const rs = [...document.querySelectorAll('[data-testid=job-row]')];"
        " return rs.length > 0 && rs.every(r => r.dataset.status === s); }"
    )
    p.get_by_test_id("filter-running").click()
    expect(p).to_have_url(re.compile(r"#/\?status=running$"))
    p.wait_for_function(only, arg="running")
    expect(row(slow)).to_be_visible()
    expect(row(quick)).to_have_count(0)
    p.get_by_test_id("filter-succeeded").click()
    p.wait_for_function(only, arg="succeeded")
    expect(row(filler[-1])).to_be_visible()
    expect(row(slow)).to_have_count(0)
    p.get_by_test_id("filter-failed").click()
    expect(row(filler[-1])).to_have_count(0)

    # Live refresh: a job submitted now shows up, and a status change shows, without reload.
    p.get_by_test_id("filter-all").click()
    p.evaluate("window.__sameDocument = true")
    fresh = dash.api.submit({"name": f"list-fresh-{tag}", "nodes": [node("x", "sleep 60")]})
    expect(row(fresh)).to_have_attribute("data-status", "running")
    assert dash.api.http.post(f"/v1/jobs/{fresh}/cancel").status_code == 200
    expect(row(fresh)).to_have_attribute("data-status", "cancelled")
    assert p.evaluate("window.__sameDocument") is True

    row(fresh).locator("td").nth(2).click()
    expect(p).to_have_url(re.compile(f"#/jobs/{fresh}$"))
    expect(p.get_by_test_id("job-name")).to_have_text(f"list-fresh-{tag}")
    p.get_by_test_id("back").click()
    expect(rows.first).to_be_visible()
    assert dash.api.http.post(f"/v1/jobs/{slow}/cancel").status_code == 200


def test_cancel_button_asks_then_cancels_a_running_job(dash: Dash, page: Watched) -> None:
    job_id = dash.api.submit(
        {
            "name": "to-cancel",
            "nodes": [node("sleeper", "sleep 60"), node("after", "echo after", ["sleeper"])],
        }
    )
    p = page.page
    p.goto(f"{dash.url}/#/jobs/{job_id}")
    expect(_node(p, "sleeper")).to_have_attribute("data-state", "running")
    button = p.get_by_test_id("cancel-job")
    expect(button).to_be_enabled()

    p.once("dialog", lambda d: d.dismiss())
    button.click()
    expect(button).to_be_enabled()
    assert dash.api.get(job_id)["cancel_requested"] is False, "dismissed: nothing sent"

    p.once("dialog", lambda d: d.accept())
    button.click()
    expect(p.get_by_test_id("job-status")).to_have_attribute("data-status", "cancelled")
    expect(_node(p, "sleeper")).to_have_attribute("data-state", "cancelled")
    expect(_node(p, "after")).to_have_attribute("data-state", "cancelled")
    expect(button).to_be_disabled()
    assert dash.api.get(job_id)["status"] == "cancelled"


def test_event_stream_parser_and_layout(dash: Dash, page: Watched) -> None:
    """The page's own modules: the SSE parser on every split of a stream, and the layout."""
    p = page.page
    p.goto(dash.url + "/")
    events = p.evaluate(
        """async () => {
        const { EventStreamParser } = await import("/ui/sse.js");
        const text = 'retry: 2000\\r\\nid: 1\\r\\nevent: snapshot\\r\\ndata: {"a":1}\\r\\n\\r\\n'
          + ': keepalive\\n\\nid: 2\\nevent: node\\ndata: x\\ndata:  y\\n\\n'
          + 'data: no-event-name\\r\\r' + 'event: end\\ndata: {}\\n\\nevent: partial\\ndata: 1';
        const runs = [];
        for (let cut = 0; cut <= text.length; cut++) {
          const got = [];
          const parser = new EventStreamParser({
            onEvent: (e) => got.push(e), onRetry: (ms) => got.push({ retry: ms }),
            onComment: (c) => got.push({ comment: c }),
          });
          parser.push(text.slice(0, cut));
          parser.push(text.slice(cut));
          runs.push(JSON.stringify(got));
        }
        const oneByOne = [];
        const parser = new EventStreamParser({ onEvent: (e) => oneByOne.push(e) });
        for (const ch of text) parser.push(ch);
        return { runs, oneByOne };
    }"""
    )
    assert len(set(events["runs"])) == 1, "the same events whatever the chunking"
    got = json.loads(events["runs"][0])
    assert got == [
        {"retry": 2000},
        {"event": "snapshot", "data": '{"a":1}', "id": "1"},
        {"comment": "keepalive"},
        {"event": "node", "data": "x\n y", "id": "2"},
        {"event": "message", "data": "no-event-name", "id": "2"},
        {"event": "end", "data": "{}", "id": "2"},
    ]
    assert [e["event"] for e in events["oneByOne"]] == ["snapshot", "node", "message", "end"]

    geometry = p.evaluate(
        """async () => {
        const { layout } = await import("/ui/dag.js");
        const g = layout([
          { id: "root", depends_on: [] },
          { id: "left", depends_on: ["root"] },
          { id: "right", depends_on: ["root"] },
          { id: "join", depends_on: ["left", "right"] },
          { id: "late", depends_on: ["root", "join"] },
          { id: "x1", depends_on: [] }, { id: "x2", depends_on: [] },
          { id: "cx", depends_on: ["x2"] }, { id: "cy", depends_on: ["x1"] },
        ]);
        return { depth: Object.fromEntries([...g.nodes].map(([id, p]) => [id, p.depth])),
                 y: Object.fromEntries([...g.nodes].map(([id, p]) => [id, p.y])),
                 edges: g.edges.length, width: g.width, height: g.height };
    }"""
    )
    assert geometry["depth"] == {
        "root": 0,
        "left": 1,
        "right": 1,
        "join": 2,
        "late": 3,
        "x1": 0,
        "x2": 0,
        "cx": 1,
        "cy": 1,
    }
    assert geometry["edges"] == 8
    # Children follow their parents' order: no crossing between x1->cy and x2->cx.
    y = geometry["y"]
    assert (y["x1"] < y["x2"]) == (y["cy"] < y["cx"])


def test_page_reconnects_when_the_stream_drops(tmp_path: Path, page: Watched) -> None:
    """The api restarts under an open page: it says so, reconnects, and keeps following."""
    # The browser reports the refused reconnections: that is what this test provokes.
    page.allow(re.compile(r"net::ERR_CONNECTION_REFUSED"))
    cluster = Cluster(tmp_path, None, None)
    proc: Proc = cluster.add("embedded", "all", grpc_port=free_port())
    try:
        proc.start().wait_healthy()
        api = Api(proc.http_url)
        job_id = api.submit(
            {"name": "restart", "nodes": [node("a", "sleep 3"), node("b", "echo after", ["a"])]}
        )
        p = page.page
        p.goto(f"{proc.http_url}/#/jobs/{job_id}")
        expect(_node(p, "a")).to_have_attribute("data-state", "running")
        live = p.get_by_test_id("live-indicator")
        expect(live).to_have_attribute("data-live", "live")
        p.evaluate("window.__sameDocument = true")

        assert proc.stop() == 0  # drains: `a` finishes, then the process exits
        expect(live).to_have_attribute("data-live", "reconnecting")
        expect(live).to_contain_text("Reconnecting")
        proc.start().wait_healthy()
        expect(_node(p, "b")).to_have_attribute("data-state", "succeeded", timeout=60_000)
        expect(p.get_by_test_id("job-status")).to_have_attribute("data-status", "succeeded")
        expect(live).to_have_attribute("data-live", "ended")
        assert p.evaluate("window.__sameDocument") is True
        api.close()
    finally:
        cluster.stop_all()
    assert proc.exit_codes == [0, 0], proc.log()


# ---------------------------------------------------------------------------------------------
# With tokens.


@dataclass
class Secured:
    url: str
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    made = {
        who: token(who, scopes) for who, scopes in {"reader": "read", "ci": "read,submit"}.items()
    }
    env = {"MINITEMPORAL_API_TOKENS": " ".join(entry for _, entry in made.values())}
    cluster = Cluster(tmp_path_factory.mktemp("dash-auth"), None, None, extra_env=env)
    try:
        proc = cluster.add("embedded", "all", grpc_port=free_port()).start()
        proc.wait_healthy()
        yield Secured(proc.http_url, {who: secret for who, (secret, _) in made.items()})
    finally:
        cluster.stop_all()


def test_files_need_no_token_but_data_does(secured: Secured) -> None:
    for path in ("/", "/ui/app.js", "/ui/style.css"):
        assert httpx.get(secured.url + path, timeout=10).status_code == 200, path
    assert httpx.get(secured.url + "/v1/jobs", timeout=10).status_code == 401


def test_page_asks_for_a_token_and_keeps_it_in_the_tab(secured: Secured, page: Watched) -> None:
    page.allow(REFUSED)  # the 401s and the 403 this test provokes on purpose
    ci = Api(secured.url, secured.tokens["ci"])
    job_id = ci.submit({"name": "secured", "nodes": [node("sleeper", "sleep 60")]})
    p = page.page
    p.goto(f"{secured.url}/#/jobs/{job_id}")

    form = p.get_by_test_id("auth-form")
    expect(form).to_be_visible()
    expect(p.get_by_test_id("auth-message")).to_contain_text("needs an API token")
    page.shot("dashboard-token-form")
    p.get_by_test_id("token-input").fill("mt_not-a-real-token")
    p.get_by_test_id("token-submit").click()
    expect(p.get_by_test_id("auth-message")).to_contain_text("not valid")

    p.get_by_test_id("token-input").fill(secured.tokens["reader"])
    p.get_by_test_id("token-submit").click()
    expect(_node(p, "sleeper")).to_have_attribute("data-state", "running")
    expect(p.get_by_test_id("live-indicator")).to_have_attribute("data-live", "live")
    expect(p.get_by_test_id("token-state")).to_be_visible()
    p.once("dialog", lambda d: d.accept())
    p.get_by_test_id("cancel-job").click()
    expect(p.get_by_test_id("job-message")).to_contain_text("lacks the submit scope")
    assert ci.get(job_id)["status"] == "running"

    p.get_by_test_id("forget-token").click()
    expect(form).to_be_visible()
    p.get_by_test_id("token-input").fill(secured.tokens["ci"])
    p.get_by_test_id("token-submit").click()
    expect(_node(p, "sleeper")).to_have_attribute("data-state", "running")
    p.once("dialog", lambda d: d.accept())
    p.get_by_test_id("cancel-job").click()
    expect(p.get_by_test_id("job-status")).to_have_attribute("data-status", "cancelled")

    stored = p.evaluate(
        "[sessionStorage.getItem('minitemporal.token'), localStorage.length, document.cookie]"
    )
    assert stored == [secured.tokens["ci"], 0, ""]
    p.get_by_test_id("back").click()
    expect(p.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')).to_be_visible()
    wait_for(lambda: ci.get(job_id)["status"] == "cancelled", 10, "the job cancelled")
    ci.close()
