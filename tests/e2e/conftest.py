"""A running system per topology, shared by the tests of a module (processes take a second or
two to start). Every topology runs the same tests through the REST API:

- all: one `--roles all` process on PostgreSQL and Redis;
- split: scheduler, api and worker processes on PostgreSQL and Redis;
- embedded: one `--roles all` process with no database or Redis configured (SQLite file
  ./minitemporal.db in its working directory, in-process queue).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import fresh_database, fresh_prefix
from tests.support.api import Api
from tests.support.procs import Cluster
from tests.support.services import free_port

TOPOLOGIES = ["all", "split", "embedded"]


@dataclass
class System:
    api: Api
    cluster: Cluster
    topology: str
    tmp: Path


def start_topology(cluster: Cluster, topology: str, *, workers: int = 1) -> str:
    """Start processes; return the api's base URL."""
    if topology in ("all", "embedded"):
        proc = cluster.add(topology, "all", grpc_port=free_port()).start()
        proc.wait_healthy()
        return proc.http_url
    grpc = free_port()
    scheduler = cluster.add("scheduler", "scheduler", grpc_port=grpc).start()
    api = cluster.add("api", "api", scheduler_port=grpc).start()
    procs = [scheduler, api]
    for i in range(workers):
        procs.append(cluster.add(f"worker{i + 1}", "worker", scheduler_port=grpc).start())
    for p in procs:
        p.wait_healthy()
    return api.http_url


@contextlib.contextmanager
def topology_cluster(request: pytest.FixtureRequest, topology: str, tmp: Path) -> Iterator[Cluster]:
    """A cluster for the topology; PostgreSQL and Redis only for those that use them."""
    if topology == "embedded":
        yield Cluster(tmp, database_url=None, redis_url=None)
        return
    admin: str = request.getfixturevalue("pg_admin_url")
    template: str = request.getfixturevalue("pg_template")
    redis_url: str = request.getfixturevalue("redis_server_url")
    with fresh_database(admin, template) as db, fresh_prefix(redis_url) as prefix:
        yield Cluster(tmp, db, redis_url, prefix)


@pytest.fixture(scope="module", params=TOPOLOGIES)
def system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    topology = request.param
    tmp = tmp_path_factory.mktemp(f"e2e-{topology}")
    with topology_cluster(request, topology, tmp) as cluster:
        try:
            url = start_topology(cluster, topology)
            api = Api(url)
            yield System(api, cluster, topology, tmp)
            api.close()
        finally:
            cluster.stop_all()
            for p in cluster.procs:
                assert all(code == 0 for code in p.exit_codes), (p.name, p.exit_codes, p.log())
