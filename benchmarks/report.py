"""Output: the table on stdout, the JSON results file, the Markdown table in README.md."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import commits, cpu, stats
from benchmarks.workloads import ROWS, lookup

START = "<!-- results:start -->"
END = "<!-- results:end -->"


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": memory_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": load,
    }


def rows(results: dict[str, Any], peer: str | None) -> list[dict[str, Any]]:
    ours = results["figures"].get("minitemporal", {})
    theirs = results["figures"].get(peer, {}) if peer else {}
    out = []
    for figure, path in ROWS:
        a, b = lookup(ours, path), lookup(theirs, path)
        if a is None and b is None:
            continue
        out.append(
            {
                "workload": figure.workload,
                "figure": figure.label,
                "unit": figure.unit,
                "better": figure.better,
                "minitemporal": a,
                "peer": b,
                "ratio": stats.ratio(a, b),
                "round_ratios": round_ratios(ours, theirs, path),
            }
        )
    return out


def round_ratios(
    ours: dict[str, Any], theirs: dict[str, Any], path: tuple[str, ...]
) -> list[float] | None:
    """The ratio of each round in which both systems measured the figure (rounds of one
    workload run back to back, so each pair saw the same machine), or None with one round."""
    key, rest = path[0], path[1:]
    mine, peers = ours.get(key, {}).get("rounds"), theirs.get(key, {}).get("rounds")
    if not mine or not peers:
        return None
    out = []
    for a, b in zip(mine, peers, strict=False):
        r = stats.ratio(*(lookup(f, rest) if f is not None else None for f in (a, b)))
        if r is not None:
            out.append(r)
    return out or None


def _range(values: list[float] | None) -> str:
    return "—" if not values else f"{min(values):.2f}-{max(values):.2f}x"


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _has_rounds(table: list[dict[str, Any]]) -> bool:
    return any(r.get("round_ratios") for r in table)


def text_table(table: list[dict[str, Any]], peer: str | None) -> str:
    rounds = _has_rounds(table)
    if peer:
        head = ["figure", "unit", "minitemporal", peer, f"ratio mt/{peer}"]
        head += ["per round", "better"] if rounds else ["better"]
    else:
        head = ["figure", "unit", "minitemporal", "better"]
    body = [
        [r["figure"], r["unit"], _num(r["minitemporal"])]
        + ([_num(r["peer"]), _ratio(r["ratio"])] if peer else [])
        + ([_range(r.get("round_ratios"))] if peer and rounds else [])
        + [r["better"]]
        for r in table
    ]
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
    lines = [
        "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [head, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


CPU_WORKLOADS = (
    ("throughput_one_job", "(b) one job", "node"),
    ("throughput_many_jobs", "(b) many jobs", "node"),
    ("submit", "(d) submission", "accepted job"),
)


def commit_note(results: dict[str, Any]) -> str | None:
    """The PostgreSQL server's own commit times during (a): a p99 or a max that a commit
    stall of the server explains shows beside a stall of the probe."""
    latency = results.get("figures", {}).get("minitemporal", {}).get("latency") or {}
    summary = latency.get("postgres_commit_probe")
    text = commits.describe(summary)
    if summary is None or text is None:
        return None
    every = f"every {summary['interval_ms']:.0f} ms"
    line = f"(a) PostgreSQL's own commits meanwhile (a connection of their own, {every}): {text}"
    rounds = [r for r in latency.get("rounds") or [] if r and r.get("postgres_commit_probe")]
    if len(rounds) > 1:  # side by side, round by round: a stall and a slow start coincide
        probe = "/".join(f"{r['postgres_commit_probe'].get('max_ms', 0):.1f}" for r in rounds)
        starts = "/".join(f"{r['enqueue_to_start_ms']['max']:.1f}" for r in rounds)
        line += f" (medians of the rounds); the rounds' maxima: probe {probe} ms, "
        line += f"enqueue→start {starts} ms"
    return line


def cpu_notes(results: dict[str, Any], peer: str | None) -> list[str]:
    """Where each system's CPU went in the workloads that saturate the machine, by process,
    and for (d) how much accepted work was still unfinished as the window closed."""
    systems = ["minitemporal", *([peer] if peer else [])]
    lines = []
    for key, label, unit in CPU_WORKLOADS:
        for name in systems:
            figures = results.get("figures", {}).get(name, {}).get(key) or {}
            text = cpu.breakdown(figures.get("cpu"), unit)
            if text is None:
                continue
            left = figures.get("unfinished_at_end")
            if left is not None:
                text += f"; {left:.0f} accepted jobs unfinished as the window closed"
            lines.append(f"{label}, {name}: {text}")
    return lines


def markdown(results: dict[str, Any], table: list[dict[str, Any]], peer: str | None) -> str:
    m = results["machine"]
    sys_ = results["systems"]
    lines = [
        f"Run on {results['date']} with `{results['command']}`.",
        "",
        f"- Machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}, Python {m['python']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['load_average_at_start'] or [])}.",
        f"- minitemporal: {sys_['minitemporal']['description']}.",
    ]
    if peer and peer in sys_:
        lines.append(f"- {peer}: {sys_[peer]['description']}.")
    lines += [
        f"- Sizes: {results['plan_description']}.",
        "",
    ]
    rounds = peer is not None and _has_rounds(table)
    if peer and rounds:
        lines += [
            f"| figure | unit | minitemporal | {peer} | ratio mt/{peer} | per round | better |",
            "|---|---|--:|--:|--:|--:|---|",
        ]
    elif peer:
        lines += [
            f"| figure | unit | minitemporal | {peer} | ratio mt/{peer} | better |",
            "|---|---|--:|--:|--:|---|",
        ]
    else:
        lines += ["| figure | unit | minitemporal | better |", "|---|---|--:|---|"]
    for r in table:
        cells = [r["figure"], r["unit"], _num(r["minitemporal"])]
        if peer:
            cells += [_num(r["peer"]), _ratio(r["ratio"])]
        if rounds:
            cells.append(_range(r.get("round_ratios")))
        lines.append("| " + " | ".join([*cells, r["better"]]) + " |")
    probe = commit_note(results)
    if probe:
        lines += ["", probe]
    notes = cpu_notes(results, peer)
    if notes:
        lines += ["", "CPU by process (milliseconds of CPU time; medians of the rounds):", ""]
        lines += [f"- {n}" for n in notes]
    if results.get("errors"):
        lines.append("")
        lines.append("Errors in this run:")
        lines += [f"- {k}: {v.splitlines()[0] if v else v}" for k, v in results["errors"].items()]
    return "\n".join(lines)


def update_readme(readme: Path, block: str) -> bool:
    """Replace the text between the result markers; False when the markers are missing."""
    text = readme.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return False
    new = text[: start + len(START)] + "\n" + block.rstrip() + "\n" + text[end:]
    readme.write_text(new)
    return True


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
