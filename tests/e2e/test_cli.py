"""The command line client (`python -m minitemporal submit|jobs ...`) run as a subprocess
against real systems: the embedded one-process topology, the PostgreSQL + Redis split one
(cancel while watching, an api restart under a live watch), and an api with tokens."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import start_topology, topology_cluster
from tests.support.api import Api, node
from tests.support.procs import ROOT, Cluster, Proc, minitemporal_command
from tests.support.security import token
from tests.support.services import free_port
from tests.support.topology import wait_for

TIME = r"\d\d:\d\d:\d\d"


@dataclass
class Running:
    url: str
    api: Api
    cluster: Cluster
    tmp: Path

    def proc(self, name: str) -> Proc:
        return next(p for p in self.cluster.procs if p.name == name)


@contextlib.contextmanager
def running(
    request: pytest.FixtureRequest,
    tmp: Path,
    topology: str,
    env: dict[str, str] | None = None,
    token: str | None = None,
) -> Iterator[Running]:
    with topology_cluster(request, topology, tmp) as cluster:
        cluster.extra_env.update(env or {})
        try:
            url = start_topology(cluster, topology)
            api = Api(url, token=token)
            yield Running(url, api, cluster, tmp)
            api.close()
        finally:
            cluster.stop_all()
            for p in cluster.procs:
                assert all(code == 0 for code in p.exit_codes), (p.name, p.exit_codes, p.log())


@pytest.fixture(scope="module")
def embedded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    with running(request, tmp_path_factory.mktemp("cli-embedded"), "embedded") as system:
        yield system


@pytest.fixture(scope="module")
def split(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    with running(request, tmp_path_factory.mktemp("cli-split"), "split") as system:
        yield system


@dataclass
class Secured:
    system: Running
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def secured(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    made = {who: token(who, scopes) for who, scopes in (("ci", "read,submit"), ("ro", "read"))}
    env = {"MINITEMPORAL_API_TOKENS": " ".join(entry for _, entry in made.values())}
    tmp = tmp_path_factory.mktemp("cli-secured")
    with running(request, tmp, "embedded", env, token=made["ci"][0]) as system:
        yield Secured(system, {who: secret for who, (secret, _) in made.items()})


def client_env(url: str, **extra: str) -> dict[str, str]:
    """A clean environment: nothing of the test runner's MINITEMPORAL_* settings leaks in."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        "MINITEMPORAL_API_URL": url,
        **extra,
    }


def mt(
    url: str,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*minitemporal_command(), *args],
        env=client_env(url, **(env or {})),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with `code` and said why in one line on stderr, nothing on stdout."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("minitemporal: "), result.stderr
    assert result.stdout == ""
    return lines[0]


def progress_line(out: str, node_id: str, state: str, rest: str = r".*") -> bool:
    pattern = rf"^{TIME}  {re.escape(node_id)}\s+{state}\s+{rest}$"
    return re.search(pattern, out, re.MULTILINE) is not None


def submitted_id(out: str) -> str:
    found = re.search(r"submitted job ([0-9a-f-]{36})", out)
    assert found, out
    return found.group(1)


def write_json(path: Path, document: Any) -> str:
    path.write_text(json.dumps(document))
    return str(path)


# --- the embedded system
def test_submit_wait_follows_a_yaml_dag_to_success(embedded: Running) -> None:
    dag = embedded.tmp / "etl.yaml"
    dag.write_text(
        "# a YAML DAG: the job itself, not the request body\n"
        "name: etl\n"
        "nodes:\n"
        "  - id: extract\n"
        "    command: echo extracted\n"
        "  - id: transform\n"
        "    command: sleep 0.3 && echo transformed\n"
        "    depends_on: [extract]\n"
        "    retries: 2\n"
        "  - id: load\n"
        "    command: echo loaded\n"
        "    depends_on: [transform]\n"
    )
    result = mt(embedded.url, "submit", str(dag), "--wait")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "polling" not in result.stderr, "live updates come from the event stream"
    out = result.stdout
    job_id = submitted_id(out)
    assert progress_line(out, "extract", "succeeded", r"attempt 1/1\s+exit 0")
    assert progress_line(out, "transform", "running", r"attempt 1/3\s+on \S+")
    assert progress_line(out, "transform", "succeeded", r"attempt 1/3\s+exit 0")
    assert progress_line(out, "load", "succeeded", r"attempt 1/1\s+exit 0")
    assert out.rstrip().splitlines()[-1].startswith(f"job {job_id} succeeded in ")
    assert out.index("transform  running") < out.index("transform  succeeded")
    job = embedded.api.get(job_id)
    assert job["status"] == "succeeded" and job["name"] == "etl"


def test_submit_reads_standard_input_and_honours_the_idempotency_key(embedded: Running) -> None:
    key = f"cli-{uuid.uuid4()}"
    body = json.dumps({"job": {"name": "stdin", "nodes": [node("only", "echo hi")]}})
    first = mt(embedded.url, "submit", "-", "--idempotency-key", key, stdin=body)
    assert first.returncode == 0, first.stderr
    job_id = submitted_id(first.stdout)
    assert f"minitemporal jobs watch {job_id}" in first.stdout
    again = mt(embedded.url, "submit", "-", "--idempotency-key", key, stdin=body)
    assert again.returncode == 0, again.stderr
    assert f"job {job_id} (stdin) was already submitted" in again.stdout
    assert embedded.api.wait(job_id)["status"] == "succeeded"


def test_submit_wait_exits_1_when_the_job_fails(embedded: Running) -> None:
    dag = write_json(
        embedded.tmp / "fails.json",
        {
            "name": "fails",
            "nodes": [
                node("first", "echo ok"),
                node("broken", "echo bad >&2; exit 3", ["first"]),
                node("after", "true", ["broken"]),
            ],
        },
    )
    result = mt(embedded.url, "submit", dag, "--wait")
    assert result.returncode == 1, (result.stdout, result.stderr)
    out = result.stdout
    job_id = submitted_id(out)
    assert progress_line(out, "broken", "failed", r"attempt 1/1\s+exit 3")
    assert progress_line(out, "after", "upstream_failed", r".*broken.*")
    summary = out[out.index(f"job {job_id} failed after") :]
    assert "1 succeeded, 1 failed, 1 upstream_failed" in summary
    assert f"minitemporal jobs logs {job_id} broken" in summary
    watched = mt(embedded.url, "jobs", "watch", job_id)
    assert watched.returncode == 1, "a finished job: its snapshot, its end, the same verdict"
    assert watched.stdout.splitlines()[0] == f"job {job_id} (fails): failed, 3 nodes"


def test_json_output_is_the_apis_json(embedded: Running) -> None:
    dag = write_json(embedded.tmp / "j.json", {"name": "json", "nodes": [node("a", "echo a")]})
    created = json.loads(mt(embedded.url, "submit", dag, "--json").stdout)
    assert created["status"] == "running" and created["nodes_total"] == 1
    embedded.api.wait(created["id"])
    got = mt(embedded.url, "jobs", "get", created["id"], "--json")
    assert json.loads(got.stdout) == embedded.api.get(created["id"])
    listed = json.loads(mt(embedded.url, "jobs", "list", "--limit", "500", "--json").stdout)
    assert created["id"] in {j["id"] for j in listed["jobs"]}

    followed = mt(embedded.url, "submit", dag, "--wait", "--json")
    assert followed.returncode == 0, followed.stderr
    events = [json.loads(line) for line in followed.stdout.splitlines()]  # NDJSON
    assert events[0]["event"] == "submitted"
    assert events[1]["event"] == "snapshot" and events[1]["data"]["id"] == events[0]["data"]["id"]
    assert "nodes" in events[1]["data"]
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "succeeded"
    assert {e["event"] for e in events} <= {"submitted", "snapshot", "node", "job", "end"}
    assert all(e["id"] for e in events[1:]), "each stream event keeps its SSE id"


def test_list_get_and_logs(embedded: Running) -> None:
    dag = write_json(
        embedded.tmp / "logs.json",
        {
            "name": "logs-demo",
            "nodes": [
                node("speak", "echo to-stdout; echo to-stderr >&2"),
                node(
                    "flaky",
                    'echo "try $MINITEMPORAL_ATTEMPT"; test "$MINITEMPORAL_ATTEMPT" = 2',
                    retries=1,
                    retry_backoff={"base_seconds": 0.1, "factor": 1, "max_seconds": 0.1},
                ),
            ],
        },
    )
    job_id = submitted_id(mt(embedded.url, "submit", dag).stdout)
    assert embedded.api.wait(job_id)["status"] == "succeeded"

    listed = mt(embedded.url, "jobs", "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "STATUS", "CREATED", "DURATION", "NODES"]
    row = next(r for r in rows if r.startswith(job_id))
    assert row.split()[1:3] == ["logs-demo", "succeeded"] and row.endswith("2 succeeded")
    failed_only = mt(embedded.url, "jobs", "list", "--status", "failed")
    assert job_id not in failed_only.stdout

    got = mt(embedded.url, "jobs", "get", job_id)
    assert got.returncode == 0, got.stderr
    assert re.search(rf"^id\s+{job_id}$", got.stdout, re.MULTILINE)
    assert re.search(r"^status\s+succeeded$", got.stdout, re.MULTILINE)
    table = got.stdout.split("\n\n")[1].splitlines()
    assert table[0].split() == ["NODE", "STATE", "ATTEMPT", "EXIT", "DURATION", "EXPLANATION"]
    assert table[1].split()[:4] == ["speak", "succeeded", "1/1", "0"]
    assert table[2].split()[:4] == ["flaky", "succeeded", "2/2", "0"]

    assert mt(embedded.url, "jobs", "logs", job_id, "speak").stdout == "to-stdout\n"
    assert mt(embedded.url, "jobs", "logs", job_id, "speak", "--stderr").stdout == "to-stderr\n"
    assert mt(embedded.url, "jobs", "logs", job_id, "flaky").stdout == "try 2\n"
    first = mt(embedded.url, "jobs", "logs", job_id, "flaky", "--attempt", "1")
    assert first.stdout == "try 1\n" and first.returncode == 0
    record = json.loads(mt(embedded.url, "jobs", "logs", job_id, "flaky", "--json").stdout)
    assert record["attempt"] == 2 and record["stdout"]["tail"] == "try 2\n"
    assert "no attempt 3" in one_line_error(
        mt(embedded.url, "jobs", "logs", job_id, "flaky", "--attempt", "3"), 4
    )
    assert "no node 'nope' (its nodes: speak, flaky)" in one_line_error(
        mt(embedded.url, "jobs", "logs", job_id, "nope"), 4
    )


def test_logs_say_when_output_was_truncated(embedded: Running) -> None:
    command = "head -c 100000 /dev/zero | tr '\\0' x; echo; echo the-end"
    dag = write_json(embedded.tmp / "big.json", {"name": "big", "nodes": [node("big", command)]})
    job_id = submitted_id(mt(embedded.url, "submit", dag).stdout)
    embedded.api.wait(job_id)
    result = mt(embedded.url, "jobs", "logs", job_id, "big")
    assert result.returncode == 0
    assert result.stdout.endswith("xxx\nthe-end\n") and len(result.stdout) < 100_000
    assert "truncated" in result.stdout.splitlines()[0], "the server's marker line"
    (note,) = result.stderr.splitlines()
    assert note.startswith("minitemporal: stdout of attempt 1 was truncated")
    assert note.endswith("of 100009"), note


def test_errors_are_one_line(embedded: Running) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    for args in (("jobs", "list"), ("jobs", "watch", str(uuid.uuid4()))):
        line = one_line_error(mt(closed, *args), 3)
        assert line == f"minitemporal: cannot reach the API at {closed}: connection refused"

    tmp = embedded.tmp
    line = one_line_error(mt(embedded.url, "submit", str(tmp / "missing.yaml")), 2)
    assert line == f"minitemporal: {tmp / 'missing.yaml'}: no such file"
    (tmp / "broken.json").write_text('{\n  "name": "x",\n  "nodes": [}\n')
    line = one_line_error(mt(embedded.url, "submit", str(tmp / "broken.json")), 2)
    assert "invalid JSON at line 3, column 13" in line
    (tmp / "broken.yaml").write_text("name: x\nnodes:\n  - id: a\n   command: b\n")
    assert "invalid YAML at line 4" in one_line_error(
        mt(embedded.url, "submit", str(tmp / "broken.yaml")), 2
    )
    assert "must be an object" in one_line_error(mt(embedded.url, "submit", "-", stdin="[]"), 2)

    unknown = str(uuid.uuid4())
    assert f"no job {unknown} (404)" in one_line_error(mt(embedded.url, "jobs", "get", unknown), 4)
    assert "(404)" in one_line_error(mt(embedded.url, "jobs", "cancel", "not-a-uuid"), 4)

    done = submitted_id(
        mt(
            embedded.url,
            "submit",
            "-",
            stdin='{"name": "d", "nodes": [{"id": "a", "command": "true"}]}',
        ).stdout
    )
    embedded.api.wait(done)
    assert "(409)" in one_line_error(mt(embedded.url, "jobs", "cancel", done), 4)


def test_validation_problems_are_listed_with_their_pointers(embedded: Running) -> None:
    job = {
        "name": "bad",
        "nodes": [node("a", "true", ["b"]), node("b", "true", ["a"]), node("a", "true")],
    }
    result = mt(embedded.url, "submit", "-", stdin=json.dumps(job))
    assert result.returncode == 4 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("minitemporal: the job is invalid") and "(422)" in lines[0]
    assert "minitemporal:   /job/nodes/2/id: duplicate node id 'a'" in "\n".join(lines)
    assert any(line.startswith("minitemporal:   /job/nodes: dependency cycle") for line in lines)


# --- PostgreSQL + Redis, one process per role
def test_cancel_a_running_job_while_watching_it(split: Running) -> None:
    dag = write_json(
        split.tmp / "sleepy.json",
        {"name": "sleepy", "nodes": [node("nap", "sleep 60"), node("after", "true", ["nap"])]},
    )
    job_id = submitted_id(mt(split.url, "submit", dag).stdout)
    split.api.wait(job_id, lambda j: j["nodes"][0]["state"] == "running", timeout=30)

    out_path = split.tmp / "watch.out"
    with out_path.open("w") as out:
        watcher = subprocess.Popen(
            [*minitemporal_command(), "jobs", "watch", job_id],
            env=client_env(split.url),
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        wait_for(lambda: progress_line(out_path.read_text(), "nap", "running"), 30, "the watch")
        cancelled = mt(split.url, "jobs", "cancel", job_id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert f"job {job_id}: cancel requested" in cancelled.stdout
        assert watcher.wait(timeout=60) == 1, "a cancelled job is not a success"
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    out = out_path.read_text()
    assert "polling" not in (watcher.stderr.read() if watcher.stderr else "")
    assert progress_line(out, "nap", "cancelled", r"attempt 1/1\s+.*killed.*")
    assert progress_line(out, "after", "cancelled")
    assert out.rstrip().splitlines()[-1].startswith(f"job {job_id} cancelled after ")
    assert split.api.get(job_id)["status"] == "cancelled"


def test_a_live_watch_survives_an_api_restart(split: Running) -> None:
    dag = write_json(
        split.tmp / "slow.json",
        {
            "name": "slow",
            "nodes": [node("slow", "sleep 4; echo done"), node("next", "true", ["slow"])],
        },
    )
    out_path = split.tmp / "wait.out"
    with out_path.open("w") as out:
        waiter = subprocess.Popen(
            [*minitemporal_command(), "submit", dag, "--wait"],
            env=client_env(split.url),
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        wait_for(
            lambda: progress_line(out_path.read_text(), "slow", "running"), 30, "the node to run"
        )
        api = split.proc("api")
        assert api.stop() == 0, "the api closes open event streams and exits cleanly"
        api.start()
        api.wait_healthy()
        assert waiter.wait(timeout=90) == 0
    finally:
        if waiter.poll() is None:
            waiter.send_signal(signal.SIGINT)
            waiter.wait()
    err = waiter.stderr.read() if waiter.stderr else ""
    assert "reconnecting in" in err and "polling" not in err, err
    out = out_path.read_text()
    assert progress_line(out, "slow", "succeeded", r"attempt 1/1\s+exit 0")
    assert progress_line(out, "next", "succeeded")
    running_lines = re.findall(rf"^{TIME}  slow\s+running\s", out, re.MULTILINE)
    assert len(running_lines) == 1, "a fresh snapshot prints only what changed"


# --- an api with tokens
def test_tokens_come_from_the_environment_or_a_file(secured: Secured) -> None:
    url = secured.system.url
    line = one_line_error(mt(url, "jobs", "list"), 4)
    assert "(401)" in line and "set MINITEMPORAL_API_TOKEN" in line
    wrong = mt(url, "jobs", "list", env={"MINITEMPORAL_API_TOKEN": "mt_wrong"})
    assert "(401)" in one_line_error(wrong, 4)

    ci = {"MINITEMPORAL_API_TOKEN": secured.tokens["ci"]}
    body = json.dumps({"name": "authed", "nodes": [node("a", "echo ok")]})
    result = mt(url, "submit", "-", "--wait", stdin=body, env=ci)
    assert result.returncode == 0, result.stderr
    job_id = submitted_id(result.stdout)

    token_file = secured.system.tmp / "ro.token"
    token_file.write_text(secured.tokens["ro"] + "\n")
    token_file.chmod(0o600)
    listed = mt(url, "jobs", "list", "--token-file", str(token_file))
    assert listed.returncode == 0 and job_id in listed.stdout
    watched = mt(url, "jobs", "watch", job_id, "--token-file", str(token_file))
    assert watched.returncode == 0 and "polling" not in watched.stderr, watched.stderr
    denied = mt(url, "submit", "-", "--token-file", str(token_file), stdin=body)
    assert "lacks the scope" in one_line_error(denied, 4)


def test_the_token_is_never_a_flag(embedded: Running) -> None:
    result = mt(embedded.url, "jobs", "list", "--token", "mt_secret")
    assert result.returncode == 2 and "No such option" in result.stderr
    assert "mt_secret" not in result.stderr
