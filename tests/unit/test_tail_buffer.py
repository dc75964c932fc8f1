from __future__ import annotations

from minitemporal.worker.process import TailBuffer


def test_small_output_is_kept_whole() -> None:
    buf = TailBuffer(16)
    buf.feed(b"hello ")
    buf.feed(b"world\n")
    out = buf.output()
    assert out.tail == "hello world\n" and out.total_bytes == 12 and not out.truncated


def test_large_output_keeps_the_tail_with_a_marker() -> None:
    buf = TailBuffer(10)
    for i in range(1000):
        buf.feed(f"{i:04d}\n".encode())
    out = buf.output()
    assert out.total_bytes == 5000 and out.truncated
    assert out.tail.endswith("0998\n0999\n")
    assert out.tail.startswith("[... 4990 earlier bytes truncated ...]\n")
    assert len(buf._buf) <= 20, "memory stays bounded"


def test_cut_never_starts_mid_character_and_nul_is_replaced() -> None:
    buf = TailBuffer(5)
    buf.feed("ééééé".encode())  # 10 bytes; the last 5 start mid-character
    buf.feed(b"\x00")
    out = buf.output()
    assert "\x00" not in out.tail
    assert out.tail.split("\n", 1)[1] == "éé\ufffd"
