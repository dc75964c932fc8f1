"""The committed gRPC code is exactly what scripts/gen_protos.py makes from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "minitemporal" / "rpc" / "gen"


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(out)], check=True
    )
    fresh = {p.name: p.read_text() for p in out.iterdir() if p.is_file()}
    committed = {p.name: p.read_text() for p in COMMITTED.iterdir() if p.is_file()}
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"regenerate with scripts/gen_protos.py: {stale} differ from proto/"
