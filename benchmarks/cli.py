"""`python -m benchmarks`: start the systems, run the workloads, report.

Small by default (the whole run fits in about three minutes on 2 cores); `--full` runs the
issue's full sizes. See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import report, workloads
from benchmarks.cpu import Meter
from benchmarks.workloads import Plan, WorkloadError

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "latest.json"
README = HERE / "README.md"
ALIASES = {"a": "latency", "b": "throughput", "c": "dag", "d": "submit"}


def parse_workloads(value: str) -> list[str]:
    chosen = []
    for part in value.split(","):
        name = ALIASES.get(part.strip().lower(), part.strip().lower())
        if not name:
            continue
        if name == "all":
            return list(workloads.WORKLOADS)
        if name not in workloads.WORKLOADS:
            raise argparse.ArgumentTypeError(
                f"unknown workload {part!r}: choose from {', '.join(workloads.WORKLOADS)} "
                "(or a, b, c, d, all)"
            )
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise argparse.ArgumentTypeError("no workload chosen")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark minitemporal against a peer (Celery) on this machine: "
        "(a) latency, (b) throughput, (c) DAG overhead, (d) submission rate. Starts the "
        "systems itself (private PostgreSQL database and Redis key prefix, loopback only), "
        "prints a table, writes JSON and the Markdown table of benchmarks/README.md.",
    )
    g = p.add_argument_group("system under test")
    g.add_argument(
        "--topology",
        choices=["all", "split"],
        default=None,
        help="all: one `--roles all` process; split: api, scheduler and worker "
        "processes [default: split; all with --backend embedded]",
    )
    g.add_argument(
        "--backend",
        choices=["postgres", "embedded"],
        default="postgres",
        help="postgres: PostgreSQL + Redis; embedded: no database or Redis URL "
        "(--roles all only; skipped with a message if it cannot start) "
        "[default: postgres]",
    )
    g.add_argument(
        "--api-url",
        default=None,
        help="benchmark an already running minitemporal at this URL instead of "
        "starting one (tell its worker slots with --slots)",
    )
    g.add_argument(
        "--slots",
        type=int,
        default=4,
        help="worker slots of minitemporal and Celery's --concurrency [default: 4]",
    )
    g.add_argument(
        "--worker-processes",
        type=int,
        default=1,
        help="split --slots over this many minitemporal worker processes (split topology "
        "only; Celery keeps one worker with --concurrency = --slots) [default: 1]",
    )
    g.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level of both systems (logs go to files) [default: info]",
    )
    g.add_argument(
        "--database-url",
        default=os.environ.get(
            "MT_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="admin URL of PostgreSQL; the suite creates and drops its own "
        "database mt_bench_<random> there (env MT_BENCH_DATABASE_URL) "
        "[default: %(default)s]",
    )
    g.add_argument(
        "--redis-url",
        default=os.environ.get("MT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis for minitemporal (keys under mt-bench-<random>:) "
        "(env MT_BENCH_REDIS_URL) [default: %(default)s]",
    )
    g = p.add_argument_group("peer")
    g.add_argument(
        "--peer",
        choices=["celery", "none"],
        default="celery",
        help="the system to compare with, run in the same invocation [default: celery]",
    )
    g.add_argument(
        "--celery-redis-url",
        default=os.environ.get("MT_BENCH_CELERY_REDIS_URL"),
        help="Redis of Celery's broker and result backend (its keys and queue are "
        "named mt-bench-celery-<random>) (env MT_BENCH_CELERY_REDIS_URL) "
        "[default: --redis-url]",
    )
    g = p.add_argument_group("workloads and sizes")
    g.add_argument(
        "--workloads",
        type=parse_workloads,
        default=list(workloads.WORKLOADS),
        help="comma list of latency, throughput, dag, submit (or a,b,c,d) [default: all]",
    )
    g.add_argument(
        "--full",
        action="store_true",
        help="full sizes: 5,000-node bursts, 60 s of latency, 10 DAG repeats, 15 s "
        "of submission (default sizes fit in about 3 minutes)",
    )
    g.add_argument("--latency-rate", type=float, help="(a) jobs per second [default: 20]")
    g.add_argument(
        "--latency-seconds", type=float, help="(a) seconds of submissions [default: 15; --full 60]"
    )
    g.add_argument(
        "--burst-nodes", type=int, help="(b) nodes per burst [default: 2000; --full 5000]"
    )
    g.add_argument(
        "--burst-jobs",
        type=int,
        help="(b) jobs the spread burst is cut into [default: 40; --full 100]",
    )
    g.add_argument("--dag-repeats", type=int, help="(c) runs of each DAG [default: 3; --full 10]")
    g.add_argument("--clients", type=int, help="(d) concurrent client processes [default: 8]")
    g.add_argument(
        "--rounds",
        type=int,
        help="run each workload this many times, the two systems taking turns to go first, "
        "and report the median of each figure and the range of the per-round ratios "
        "[default: 1; --full 3]",
    )
    g.add_argument(
        "--submit-seconds", type=float, help="(d) seconds of submissions [default: 5; --full 15]"
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="JSON results file [default: benchmarks/results/latest.json]",
    )
    g.add_argument(
        "--no-readme",
        action="store_true",
        help="do not write the Markdown table into benchmarks/README.md",
    )
    g.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the processes' logs (their folder is printed); kept anyway "
        "when something failed",
    )
    return p


def make_plan(args: argparse.Namespace) -> Plan:
    plan = Plan.full() if args.full else Plan.small()
    overrides = {
        "latency_rate": args.latency_rate,
        "latency_seconds": args.latency_seconds,
        "burst_nodes": args.burst_nodes,
        "burst_jobs": args.burst_jobs,
        "dag_repeats": args.dag_repeats,
        "submit_clients": args.clients,
        "submit_seconds": args.submit_seconds,
        "rounds": args.rounds,
    }
    return replace(plan, **{k: v for k, v in overrides.items() if v is not None})


def describe_plan(plan: Plan, chosen: list[str]) -> str:
    parts = []
    if "latency" in chosen:
        parts.append(f"(a) {plan.latency_rate:g} jobs/s for {plan.latency_seconds:g} s")
    if "throughput" in chosen:
        per = plan.burst_nodes // plan.burst_jobs
        parts.append(f"(b) {plan.burst_nodes} nodes in 1 job and in {plan.burst_jobs} x {per}")
    if "dag" in chosen:
        parts.append(
            f"(c) {plan.chain_length}-node chain and 1→{plan.fan_width}→1 fan, "
            f"{plan.dag_repeats} runs each"
        )
    if "submit" in chosen:
        parts.append(f"(d) {plan.submit_clients} clients for {plan.submit_seconds:g} s")
    text = "; ".join(parts)
    if plan.rounds > 1:
        text += (
            f"; each {plan.rounds} times, the systems taking turns to go first "
            "(medians of the rounds)"
        )
    return text


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.plan = make_plan(args)
        self.figures: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, str] = {}
        self._rounds: dict[tuple[str, str], list[dict[str, Any] | None]] = {}
        self._round = 0

    def measure(
        self,
        target: Any,
        key: str,
        run: Callable[[], Any],
        compute: Callable[[Any], dict[str, Any]],
    ) -> None:
        name = target.name
        rounds = self._rounds.setdefault((name, key), [])
        rounds.append(None)  # until it succeeds: a failed round keeps its place
        error_key = f"{name}/{key}" + (f"#{self._round + 1}" if self.plan.rounds > 1 else "")
        t0 = time.monotonic()
        try:
            figures = compute(run())
        except (WorkloadError, ValueError, OSError) as exc:
            self.errors[error_key] = str(exc)
            say(f"  {name:12s} {key}: FAILED: {str(exc).splitlines()[0]}")
            return
        except Exception as exc:  # report, keep going with the other workloads
            self.errors[error_key] = traceback.format_exc()
            say(f"  {name:12s} {key}: FAILED: {exc!r}")
            return
        rounds[-1] = figures
        merged = workloads.merge_rounds(rounds)
        if merged is not None:
            self.figures.setdefault(name, {})[key] = merged
        say(f"  {name:12s} {key}: done in {time.monotonic() - t0:.1f}s")

    def run_workloads(self, targets: list[Any]) -> None:
        """Workload by workload; with several rounds, the rounds of one workload run back
        to back (close in time, so the machine's drift touches both systems alike), and the
        systems take turns to go first."""
        rounds = self.plan.rounds
        for workload in self.args.workloads:
            for index in range(rounds):
                self._round = index
                say(
                    f"workload {workload}"
                    + (f", round {index + 1} of {rounds}" if rounds > 1 else "")
                )
                self._run_workload(workload, targets if index % 2 == 0 else targets[::-1])

    def _run_workload(self, workload: str, targets: list[Any]) -> None:
        plan, slots = self.plan, self.args.slots
        per_job = max(1, plan.burst_nodes // plan.burst_jobs)
        for t in targets:
            if workload == "latency":
                self.measure(
                    t,
                    "latency",
                    lambda t=t: t.latency(plan.latency_rate, plan.latency_seconds),
                    workloads.latency_figures,
                )
            elif workload == "throughput":
                self.measure(
                    t,
                    "throughput_one_job",
                    lambda t=t: t.burst(1, plan.burst_nodes),
                    workloads.burst_figures,
                )
                self.measure(
                    t,
                    "throughput_many_jobs",
                    lambda t=t: t.burst(plan.burst_jobs, per_job),
                    workloads.burst_figures,
                )
            elif workload == "dag":
                self.measure(
                    t,
                    "dag_chain",
                    lambda t=t: [t.chain(plan.chain_length) for _ in range(plan.dag_repeats)],
                    workloads.chain_figures,
                )
                self.measure(
                    t,
                    "dag_fan",
                    lambda t=t: [t.fan(plan.fan_width) for _ in range(plan.dag_repeats)],
                    lambda fans: workloads.fan_figures(fans, slots),
                )
            elif workload == "submit":
                self.measure(
                    t,
                    "submit",
                    lambda t=t: t.submission(plan.submit_clients, plan.submit_seconds),
                    workloads.submit_figures,
                )


def command_line(argv: list[str]) -> str:
    """The command as the README shows it: without `--out FILE`, a path of one machine that
    says nothing about the figures."""
    shown: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            shown.append(arg)
    return " ".join(["python -m benchmarks", *(shlex.quote(a) for a in shown)])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.topology is None:
        args.topology = "all" if args.backend == "embedded" else "split"
    if args.backend == "embedded" and args.topology != "all":
        parser.error("--backend embedded runs only as one process: use --topology all")
    if args.slots < 1:
        parser.error("--slots must be at least 1")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.worker_processes < 1:
        parser.error("--worker-processes must be at least 1")
    if args.worker_processes > 1 and (args.topology != "split" or args.api_url):
        parser.error("--worker-processes needs the split topology the suite starts itself")
    if args.worker_processes > args.slots:
        parser.error("--worker-processes cannot exceed --slots (each needs a slot)")
    peer = None if args.peer == "none" else args.peer
    suite = Suite(args)

    from benchmarks.system import (
        Minitemporal,
        StartFailed,
        delete_prefixed_keys,
        private_database,
        run_id,
    )

    rid = run_id()
    workdir = Path(tempfile.mkdtemp(prefix=f"mt-bench-{rid}-"))
    started = time.monotonic()
    results: dict[str, Any] = {
        "suite": "minitemporal benchmarks",
        "format": 1,
        "date": report.now_iso(),
        "command": command_line(argv),
        "machine": report.machine(),
        "options": {
            "topology": None if args.api_url else args.topology,
            "backend": None if args.api_url else args.backend,
            "api_url": args.api_url,
            "slots": args.slots,
            "worker_processes": args.worker_processes,
            "peer": args.peer,
            "workloads": args.workloads,
            "full": args.full,
            "log_level": args.log_level,
        },
        "plan": vars(suite.plan),
        "plan_description": describe_plan(suite.plan, args.workloads),
        "systems": {},
        "figures": suite.figures,
        "errors": suite.errors,
    }
    say(f"minitemporal benchmarks: {results['plan_description']}")
    say(f"logs in {workdir}")
    exit_codes: dict[str, int | None] = {}
    skipped: str | None = None
    redis_prefix = f"mt-bench-{rid}"
    with contextlib.ExitStack() as stack:
        try:
            # --- minitemporal
            if args.api_url:
                api_url = args.api_url
                desc = f"already running at {api_url} ({args.slots} slots assumed)"
            else:
                database_url = redis_url = None
                if args.backend == "postgres":
                    database_url = stack.enter_context(
                        private_database(args.database_url, f"mt_bench_{rid}")
                    )
                    redis_url = args.redis_url
                    stack.callback(delete_prefixed_keys, args.redis_url, redis_prefix + ":")
                system = Minitemporal(
                    args.topology,
                    workdir,
                    args.slots,
                    database_url,
                    redis_url,
                    redis_prefix if redis_url else None,
                    log_level=args.log_level,
                    workers=args.worker_processes,
                )
                stack.callback(lambda: exit_codes.update(system.stop()))
                say(f"starting minitemporal ({args.topology}, {args.backend})")
                try:
                    api_url = system.start()
                except StartFailed as exc:
                    if args.backend != "embedded":
                        raise
                    skipped = (
                        "the embedded backend (no database or Redis URL) did not start, "
                        f"so there is nothing to measure: {str(exc).splitlines()[0]}"
                    )
                    raise _Skip() from exc
                roles = (
                    "one process --roles all"
                    if args.topology == "all"
                    else "split: api, scheduler, worker processes"
                    if args.worker_processes == 1
                    else f"split: api, scheduler, {args.worker_processes} worker processes"
                )
                store = (
                    "PostgreSQL + Redis"
                    if args.backend == "postgres"
                    else "embedded store and queue"
                )
                desc = f"{roles}, {store}, {args.slots} worker slots, log level {args.log_level}"
            results["systems"]["minitemporal"] = {"description": desc, "api_url": api_url}

            from benchmarks.ours import Ours

            ours = Ours(api_url)
            stack.callback(ours.close)
            if not args.api_url:
                servers = (
                    {"postgres": "postgres", "redis": "redis-server"}
                    if args.backend == "postgres"
                    else {}
                )
                ours.meter = Meter(system.pids(), servers)
                ours.database_url = database_url
            ours.warmup(args.slots)
            targets: list[Any] = [ours]

            # --- the peer
            if peer == "celery":
                from benchmarks.peer import CeleryPeer

                say("starting the Celery worker")
                celery = CeleryPeer(
                    args.celery_redis_url or args.redis_url,
                    f"mt-bench-celery-{rid}",
                    args.slots,
                    workdir,
                    log_level=args.log_level.upper(),
                )
                stack.callback(lambda: exit_codes.update({"celery-worker": celery.stop()}))
                celery.start()
                celery.meter = Meter(celery.pids(), {"redis": "redis-server"})
                results["systems"]["celery"] = {
                    "description": f"Celery {celery.version}, Redis broker and result backend, "
                    f"prefork --concurrency {args.slots}, prefetch multiplier 1, acks late, "
                    f"log level {args.log_level.upper()}",
                    "version": celery.version,
                }
                targets.append(celery)

            say(f"ready after {time.monotonic() - started:.1f}s")
            suite.run_workloads(targets)
        except _Skip:
            pass
        except (StartFailed, WorkloadError) as exc:
            suite.errors["setup"] = str(exc)
            say(f"FAILED to set up: {exc}")
        except Exception as exc:  # a service unreachable, a bug: say it, clean up, exit 1
            suite.errors["setup"] = traceback.format_exc()
            say(f"FAILED to set up: {exc!r}")
        except KeyboardInterrupt:
            suite.errors["setup"] = "interrupted"
            say("interrupted: stopping")
        say("stopping")
    results["exit_codes"] = exit_codes
    for name, code in exit_codes.items():
        if code not in (0, None):
            suite.errors[f"exit/{name}"] = f"{name} exited with {code}"
    results["seconds"] = round(time.monotonic() - started, 1)

    if skipped:
        results["skipped"] = skipped
        report.write_json(args.out, results)
        say(f"SKIPPED: {skipped}")
        print(f"SKIPPED: {skipped}")
        _cleanup(workdir, keep=True)
        return 0

    table = report.rows(results, peer)
    results["rows"] = table
    report.write_json(args.out, results)
    print()
    print(report.text_table(table, peer) if table else "no figures were measured")
    print()
    probe = report.commit_note(results)
    if probe:
        print(probe)
        print()
    notes = report.cpu_notes(results, peer)
    if notes:
        print("CPU by process, ms:")
        print("\n".join(f"  {n}" for n in notes))
        print()
    if suite.errors:
        print("errors:")
        for key, text in suite.errors.items():
            print(f"  {key}: {text.strip().splitlines()[-1] if text.strip() else text}")
    print(f"results: {args.out}   ({results['seconds']}s in all)")
    if not args.no_readme and table:
        if report.update_readme(README, report.markdown(results, table, peer)):
            print(f"table written into {README}")
        else:
            print(f"{README} has no {report.START} ... {report.END} markers: not updated")
    _cleanup(workdir, keep=args.keep_logs or bool(suite.errors))
    return 1 if suite.errors else 0


class _Skip(Exception):
    pass


def _cleanup(workdir: Path, keep: bool) -> None:
    if keep:
        say(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
