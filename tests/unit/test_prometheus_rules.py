"""The alert rules parse, are complete, and only name metrics that exist."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from minitemporal.observability.metrics import Metrics

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"


def exported_names() -> set[str]:
    m = Metrics()
    for group in ("scheduler", "worker", "api", "grpc"):
        getattr(m, group)
    names: set[str] = set()
    for family in m.registry.collect():
        for s in family.samples:
            names.add(s.name)
        names.add(family.name)
        if family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"}
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def test_rules_are_complete_and_name_real_metrics() -> None:
    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert len(rules) >= 8
    known = exported_names()
    for rule in rules:
        assert rule["alert"].startswith("Minitemporal")
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert rule["annotations"]["summary"]
        for metric in re.findall(r"\bminitemporal_[a-z_]+", rule["expr"]):
            assert metric in known, f"{rule['alert']}: {metric} is not exported"
