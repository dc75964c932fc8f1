"""The SSE parser against the WHATWG "event stream" interpretation rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitemporal.client.sse import Event, SSEParser


def parse(*chunks: str) -> tuple[list[Event], SSEParser]:
    parser = SSEParser()
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events, parser


def test_our_servers_stream() -> None:
    stream = (
        "retry: 2000\n\n"
        'id: 1\nevent: snapshot\ndata: {"id":"j"}\n\n'
        ": keepalive\n\n"
        'id: 2\nevent: end\ndata: {"status":"succeeded"}\n\n'
    )
    events, parser = parse(stream)
    assert events == [
        Event("snapshot", '{"id":"j"}', "1"),
        Event("end", '{"status":"succeeded"}', "2"),
    ]
    assert parser.retry_ms == 2000
    assert parser.comments == 1


def test_multi_line_data_is_joined_with_newlines_and_the_last_one_dropped() -> None:
    events, _ = parse("data: first\ndata: second\ndata:\ndata:  two spaces\n\n")
    assert events == [Event("message", "first\nsecond\n\n two spaces", "")]


def test_one_leading_space_is_removed_and_a_line_without_colon_is_a_field_name() -> None:
    events, _ = parse("data:no space\n\ndata\n\n")
    assert [e.data for e in events] == ["no space", ""]


def test_comments_and_unknown_fields_are_ignored() -> None:
    events, parser = parse(": hello\nfoo: bar\ndata: x\n: in the middle\n\n")
    assert events == [Event("message", "x", "")]
    assert parser.comments == 2


def test_an_event_without_data_is_not_dispatched_but_its_id_sticks() -> None:
    events, parser = parse("event: node\nid: 7\n\ndata: a\n\n")
    assert events == [Event("message", "a", "7")]  # the type was reset, the id was not
    assert parser.last_event_id == "7"


def test_id_persists_until_changed_and_an_empty_id_resets_it() -> None:
    events, _ = parse("id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n")
    assert [e.id for e in events] == ["1", "1", ""]


def test_an_id_with_nul_is_ignored() -> None:
    events, _ = parse("id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert [e.id for e in events] == ["1", "1"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [("retry: 1500", 1500), ("retry: 15x", 7), ("retry: -1", 7), ("retry:", 7), ("retry: 0", 0)],
)
def test_retry_takes_only_ascii_digits(line: str, expected: int) -> None:
    _, parser = parse("retry: 7\n", line + "\n")
    assert parser.retry_ms == expected


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_line_ending(newline: str) -> None:
    text = newline.join(["event: node", "data: a", "data: b", "", ": c", "data: z", "", ""])
    events, _ = parse(text)
    assert events == [Event("node", "a\nb", ""), Event("message", "z", "")]


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    events, _ = parse("data: a\r", "\n", "\r", "", "\ndata: b\r\n\r\n")
    assert events == [Event("message", "a", ""), Event("message", "b", "")]


def test_a_lone_cr_then_data_is_still_a_line_end() -> None:
    events, _ = parse("data: a\r", "data: b\r\r")
    assert events == [Event("message", "a\nb", "")]


def test_an_event_cut_off_by_the_end_of_the_stream_is_not_dispatched() -> None:
    events, parser = parse("data: whole\n\ndata: partial\n")
    assert events == [Event("message", "whole", "")]
    assert parser.buffered > 0


def test_a_leading_bom_is_skipped_once() -> None:
    events, _ = parse("\ufeffdata: a\n\n\ufeffdata: b\n\n")
    assert [e.data for e in events] == ["a"]  # the second BOM makes an unknown field name


def test_the_colon_in_the_value_is_kept() -> None:
    events, _ = parse('data: {"a": "b:c"}\n\n')
    assert events[0].data == '{"a": "b:c"}'


@given(st.data())
def test_any_chunking_gives_the_same_events(data: st.DataObject) -> None:
    stream = (
        "retry: 10\r\n: keepalive\r\n"
        'id: 1\r\nevent: snapshot\r\ndata: {"x": 1}\r\n\r\n'
        "id: 2\revent: node\rdata: é\rdata: 2\r\r"
        "id: 3\nevent: end\ndata: done\n\n"
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    events, parser = parse(*chunks)
    assert events == [
        Event("snapshot", '{"x": 1}', "1"),
        Event("node", "é\n2", "2"),
        Event("end", "done", "3"),
    ]
    assert parser.retry_ms == 10
