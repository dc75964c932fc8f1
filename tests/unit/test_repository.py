"""Repository-level checks: lint, README covers every setting, no machine paths."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minitemporal.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.fail("ruff is part of the test extra: pip install '.[test]'")
    # benchmarks/ arrives with the benchmark suite; lint what this checkout has.
    paths = [p for p in ("minitemporal", "tests", "benchmarks", "scripts") if (ROOT / p).is_dir()]
    result = subprocess.run(
        [ruff, "check", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"MINITEMPORAL_{name.upper()}"
        for name in Settings.model_fields
        if f"`MINITEMPORAL_{name.upper()}`" not in readme
    ]
    assert not missing, f"add these to the README's configuration table: {missing}"


def test_no_machine_paths_in_the_repository() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    # Paths of the machines we develop on (spelled in pieces so this file passes itself).
    needles = ("/" + "work/", "/" + "root/", "/" + "opt/wheels")
    offenders = []
    for name in tracked:
        path = ROOT / name
        if not path.is_file() or path.suffix in {".png", ".jpg"}:
            continue
        text = path.read_text(errors="ignore")
        offenders += [f"{name}: {n}" for n in needles if n in text]
    assert not offenders, offenders
