"""The docker-compose.yml topology without Docker: the same commands with the same environment,
read from the compose file, run as local processes against this test's PostgreSQL database and
Redis prefix. Only what a container would see differently is translated:

- listen addresses `0.0.0.0` become 127.0.0.1, and every container port a free local port;
- the database and Redis URLs become the test's, with the test's Redis key prefix;
- a service name in a `host:port` setting becomes its instances' local addresses. The name
  `scheduler`, shared by both schedulers, resolves in Docker's DNS to both, in varying order;
  here it becomes a gRPC `ipv4:` target listing both, rotated from one client to the next.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from minitemporal.config import WILDCARD_HOSTS
from tests.deploy.compose import HEALTHCHECK_SCRIPT, ROOT, Service, minitemporal_services
from tests.support.api import Api, nodes_by_id, ts
from tests.support.procs import Cluster, Proc
from tests.support.services import free_port

pytestmark = pytest.mark.slow
LEDGER_LINE = 'echo "$MINITEMPORAL_NODE_ID $MINITEMPORAL_ATTEMPT"'  # commands get a clean env


@dataclass
class Instance:
    """One container of a compose service: its name and its container ports, mapped."""

    service: Service
    name: str
    ports: dict[int, int]  # container port -> local port


def readme_example() -> tuple[str, bytes]:
    """The README's quick-start `curl -X POST` (its URL and exact body)."""
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"curl -X POST (\S+)[^\n]*?-d '(.*?)'", readme, re.DOTALL)
    assert m, "README.md has no `curl -X POST ... -d '...'` example"
    return m.group(1), m.group(2).encode()


def published_api_port() -> int:
    """The api's port on the Docker host, from the compose file (`127.0.0.1:HOST:CONTAINER`)."""
    spec = next(s for s in minitemporal_services() if "api" in s.roles).spec
    return int(str(spec["ports"][0]).split(":")[1])


def instances() -> list[Instance]:
    """Every container `docker compose up` starts from our image, replicas included."""
    result = []
    for s in minitemporal_services():
        for i in range(s.replicas):
            name = s.name if s.replicas == 1 else f"{s.name}-{i + 1}"
            env = s.settings_env()
            ports = {int(v): free_port() for k, v in env.items() if k.endswith("_PORT")}
            result.append(Instance(s, name, ports))
    return result


def resolve(address: str, all_instances: list[Instance], rotation: int) -> str:
    """`name:port` as a gRPC target over every instance answering to `name`."""
    host, _, port = address.rpartition(":")
    targets = [
        f"127.0.0.1:{i.ports[int(port)]}" for i in all_instances if host in i.service.aliases
    ]
    assert targets, f"nothing answers to {host!r}"
    k = rotation % len(targets)
    targets = targets[k:] + targets[:k]
    return targets[0] if len(targets) == 1 else "ipv4:" + ",".join(targets)


def local_env(
    inst: Instance, all_instances: list[Instance], rotation: int, cluster: Cluster
) -> dict[str, str]:
    env = inst.service.settings_env()
    for key, value in list(env.items()):
        if key.endswith("_PORT"):
            env[key] = str(inst.ports[int(value)])
        elif key.endswith("_HOST") and value in WILDCARD_HOSTS:
            env[key] = "127.0.0.1"
        elif key == "MINITEMPORAL_DATABASE_URL":
            assert cluster.database_url is not None
            env[key] = cluster.database_url
        elif key == "MINITEMPORAL_REDIS_URL":
            assert cluster.redis_url is not None
            env[key] = cluster.redis_url
            env["MINITEMPORAL_REDIS_PREFIX"] = cluster.redis_prefix
        elif key == "MINITEMPORAL_SCHEDULER_ADDRESS":
            env[key] = resolve(value, all_instances, rotation)
    names = {i.service.name for i in all_instances} | {"postgres", "redis", "scheduler"}
    for key, value in env.items():
        hostname = rf"(?:^|//|@)({'|'.join(map(re.escape, names))})(?=:\d|/)"
        assert not re.search(hostname, value), f"{key}={value}: a compose hostname is left"
    return env


def start(cluster: Cluster) -> dict[str, Proc]:
    """Start the topology as compose does: a service once the services it depends on (with
    `condition: service_healthy`) are healthy. Returns the processes by container name."""
    all_instances = instances()
    procs: dict[str, Proc] = {}
    for rotation, inst in enumerate(all_instances):
        env = local_env(inst, all_instances, rotation, cluster)
        port = (
            "MINITEMPORAL_API_PORT" if "api" in inst.service.roles else "MINITEMPORAL_METRICS_PORT"
        )
        log = cluster.tmp / f"{inst.name}.log"
        procs[inst.name] = Proc(inst.name, env["MINITEMPORAL_ROLES"], env, log, int(env[port]))
    cluster.procs.extend(procs.values())
    waiting = list(all_instances)
    while waiting:
        pending = {i.service.name for i in waiting}
        ready = [i for i in waiting if not set(i.service.spec.get("depends_on", {})) & pending]
        assert ready, f"depends_on has a cycle: {sorted(pending)}"
        for inst in ready:
            procs[inst.name].start()
        for inst in ready:
            procs[inst.name].wait_healthy(timeout=60)
        waiting = [i for i in waiting if i not in ready]
    return procs


def container_healthcheck(proc: Proc) -> subprocess.CompletedProcess[str]:
    """Run the image's health check with this process's environment. In a container only
    this process listens; here the port it does not serve is pointed at a closed one."""
    env = dict(proc.env)
    unused = "MINITEMPORAL_METRICS_PORT" if "api" in proc.roles else "MINITEMPORAL_API_PORT"
    env[unused] = str(free_port())
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK_SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def tasks_run(worker: Proc) -> float:
    """minitemporal_worker_tasks_total of one worker, all outcomes."""
    text = httpx.get(worker.http_url + "/metrics", timeout=10).text
    values = re.findall(r"^minitemporal_worker_tasks_total\{[^}]*\} (\S+)$", text, re.MULTILINE)
    return sum(float(v) for v in values)


def layered_job(ledger: Path, layers: int = 20, width: int = 25) -> dict[str, Any]:
    """layers x width nodes; each depends on one to three nodes of the layer before."""
    rng = random.Random(500)
    nodes = []
    for layer in range(layers):
        for i in range(width):
            deps = [] if layer == 0 else rng.sample(range(width), rng.randint(1, 3))
            nodes.append(
                {
                    "id": f"l{layer:02d}n{i:02d}",
                    "command": f"sleep 0.02; {LEDGER_LINE} >> {ledger}",
                    "retries": 2,
                    "timeout_seconds": 30,
                    "depends_on": [f"l{layer - 1:02d}n{d:02d}" for d in deps],
                }
            )
    return {"name": f"layered-{layers * width}", "nodes": nodes}


def test_compose_topology_runs_the_readme_example_and_survives_a_scheduler_kill(
    cluster: Cluster,
) -> None:
    procs = start(cluster)
    assert sum("scheduler" in p.roles for p in procs.values()) == 2
    assert sum(p.roles == "worker" for p in procs.values()) == 3
    for p in procs.values():
        result = container_healthcheck(p)
        assert result.returncode == 0, (p.name, result.stdout, result.stderr)

    api = Api(procs["api"].http_url)
    try:
        # 1. The README's quick start, byte for byte, against the published api port.
        url, body = readme_example()
        assert url == f"http://localhost:{published_api_port()}/v1/jobs", url
        reply = api.http.post(
            "/v1/jobs", content=body, headers={"Content-Type": "application/json"}
        )
        assert reply.status_code == 201, reply.text
        job = api.wait(reply.json()["id"], timeout=60)
        assert job["status"] == "succeeded"
        for name in ("extract", "transform", "load"):
            assert nodes_by_id(job)[name]["stdout"]["tail"] == f"{name}\n"

        # 2. 500 nodes; scheduler-1 is killed -9 midway.
        ledger = cluster.tmp / "layered.ledger"
        spec = layered_job(ledger)
        job_id = api.submit(spec)
        victim = procs["scheduler-1"]
        at_kill = api.wait(
            job_id, until=lambda j: j["node_counts"].get("succeeded", 0) >= 150, timeout=120
        )
        ran_before = {name: tasks_run(p) for name, p in procs.items() if p.roles == "worker"}
        victim.signal(signal.SIGKILL)
        victim.popen.wait(timeout=10)  # type: ignore[union-attr]
        assert at_kill["status"] == "running", "the kill must land midway"
        assert at_kill["node_counts"].get("succeeded", 0) < 400
        assert container_healthcheck(victim).returncode == 1, "Docker would see it unhealthy"

        job = api.wait(job_id, timeout=240, interval=0.2)
        assert job["status"] == "succeeded", job["node_counts"]
        assert job["node_counts"] == {"succeeded": 500}
        runs = ledger.read_text().splitlines()
        ran = [line.split()[0] for line in runs]
        assert len(ran) == 500 and set(ran) == {n["id"] for n in spec["nodes"]}, (
            "every node ran exactly once"
        )
        nodes = nodes_by_id(job)
        for n in nodes.values():
            for dep in n["depends_on"]:
                assert ts(n["started_at"]) >= ts(nodes[dep]["finished_at"]), (n["id"], dep)

        # Every worker kept working (those that used scheduler-1 moved to scheduler-2), the
        # survivors are healthy and they stop cleanly.
        for name, before in ran_before.items():
            assert tasks_run(procs[name]) > before, f"{name} stopped working after the kill"
        for p in procs.values():
            if p is not victim:
                p.wait_healthy(timeout=30)
                assert container_healthcheck(p).returncode == 0, p.name
    finally:
        api.close()
    for name in ["api", *sorted(n for n in procs if n.startswith("worker")), "scheduler-2"]:
        assert procs[name].stop(timeout=60) == 0, (name, procs[name].log())
