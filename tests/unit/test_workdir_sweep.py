"""Working directories name their maker, and a starting worker removes those of dead ones."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from minitemporal.worker.environment import PREFIX, WorkdirPool, owner_tag, sweep_orphans
from tests.support.topology import wait_for

HOST = "box1.example"


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def made(parent: Path, tag: str, suffix: str = "abcd1234") -> Path:
    path = parent / f"{PREFIX}{tag}-{suffix}"
    path.mkdir()
    return path


def test_only_dead_workers_directories_of_this_host_go(tmp_path: Path) -> None:
    dead = dead_pid()
    gone = made(tmp_path, owner_tag(HOST, dead))
    (gone / "sub").mkdir()
    (gone / "sub" / "secret.txt").write_text("what a command wrote")
    gone_too = made(tmp_path, owner_tag(HOST, dead), "zz_99xyz")
    # Our own pid, but another process's start time: a container restarted with the pid.
    earlier_life = made(tmp_path, f"{HOST}-{os.getpid()}-1")
    kept = [
        made(tmp_path, owner_tag(HOST, os.getppid())),  # a live process
        made(tmp_path, owner_tag(HOST, os.getpid())),  # ourselves
        made(tmp_path, owner_tag("other-host", dead)),  # another host's (a shared volume)
        made(tmp_path, "abcd1234"),  # the old naming: whose, we cannot tell
    ]
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("not ours to remove")
    link = tmp_path / f"{PREFIX}{owner_tag(HOST, dead)}-symlink1"
    link.symlink_to(target)
    plain = tmp_path / f"{PREFIX}{owner_tag(HOST, dead)}-afile123"
    plain.write_text("a file, not a directory of ours")

    assert sweep_orphans(str(tmp_path), host=HOST) == 3
    assert not gone.exists() and not gone_too.exists() and not earlier_life.exists()
    assert all(p.is_dir() for p in kept)
    assert link.is_symlink() and (target / "keep.txt").read_text() == "not ours to remove"
    assert plain.read_text() == "a file, not a directory of ours"
    assert sweep_orphans(str(tmp_path / "missing"), host=HOST) == 0
    assert owner_tag("web-01", dead) == f"web_01-{dead}-0", "no dash inside a part; gone: 0"


def test_a_pool_names_its_directories_and_sweeps_when_it_starts(tmp_path: Path) -> None:
    orphan = made(tmp_path, owner_tag(pid=dead_pid()))
    pool = WorkdirPool(str(tmp_path), size=2)
    pool.start()
    try:
        assert not orphan.exists()
        path = Path(pool.take())
        assert path.name.startswith(f"{PREFIX}{owner_tag()}-")
        assert path.parent == tmp_path and path.stat().st_mode & 0o777 == 0o700
        pool.discard(str(path))  # the attempt is over
    finally:
        pool.close()
    assert list(tmp_path.iterdir()) == []


def test_used_directories_go_whatever_the_command_left(tmp_path: Path) -> None:
    pool = WorkdirPool(str(tmp_path), size=4)
    pool.start()
    try:
        empty, full, swapped = (Path(pool.take()) for _ in range(3))
        (full / "sub").mkdir()
        (full / "sub" / "out.txt").write_text("what a command wrote")
        # A command that owns its directory may put a symlink in its place (the parent is
        # sticky, not closed): what it points to is not the pool's to remove.
        target = tmp_path.parent / f"{tmp_path.name}-target"
        target.mkdir()
        (target / "keep.txt").write_text("not ours")
        swapped.rename(tmp_path / "moved-away")
        swapped.symlink_to(target)
        for path in (empty, full, swapped):
            pool.discard(str(path))
        # Fewer than `size`: no wake, and no `take` to refill; the thread's timeout sweeps.
        wait_for(lambda: not empty.exists() and not full.exists(), 5, "the used dirs removed")
        assert (target / "keep.txt").read_text() == "not ours"
    finally:
        pool.close()
