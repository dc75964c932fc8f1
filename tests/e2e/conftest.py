"""A running system per topology, shared by the tests of a module (processes take a second or
two to start). Every topology runs the same tests through the REST API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import fresh_database, fresh_prefix
from tests.support.api import Api
from tests.support.procs import Cluster
from tests.support.services import free_port


@dataclass
class System:
    api: Api
    cluster: Cluster
    topology: str
    tmp: Path


def start_topology(cluster: Cluster, topology: str, *, workers: int = 1) -> str:
    """Start processes; return the api's base URL."""
    if topology == "all":
        proc = cluster.add("all", "all", grpc_port=free_port()).start()
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


@pytest.fixture(scope="module", params=["all", "split"])
def system(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pg_admin_url: str,
    pg_template: str,
    redis_server_url: str,
) -> Iterator[System]:
    topology = request.param
    tmp = tmp_path_factory.mktemp(f"e2e-{topology}")
    with fresh_database(pg_admin_url, pg_template) as db, fresh_prefix(redis_server_url) as prefix:
        cluster = Cluster(tmp, db, redis_server_url, prefix)
        try:
            url = start_topology(cluster, topology)
            api = Api(url)
            yield System(api, cluster, topology, tmp)
            api.close()
        finally:
            cluster.stop_all()
            for p in cluster.procs:
                assert all(code == 0 for code in p.exit_codes), (p.name, p.exit_codes, p.log())
