"""Reading DAG files for `minitemporal submit`: both shapes, JSON and YAML, and one clear line
for every way a file can be wrong."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from minitemporal.client.http import UsageProblem
from minitemporal.client.jobfile import load

JOB = {"name": "j", "nodes": [{"id": "a", "command": "echo a"}]}


def problem(path: str, stdin: bytes | None = None) -> str:
    with pytest.raises(UsageProblem) as info:
        load(path, io.BytesIO(stdin) if stdin is not None else None)
    assert info.value.exit_code == 2
    message = info.value.message
    assert "\n" not in message
    return message


def test_bare_job_is_wrapped_and_a_request_body_is_kept(tmp_path: Path) -> None:
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(JOB))
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"job": JOB}))
    assert load(str(bare)).body == {"job": JOB} and load(str(bare)).wrapped
    assert load(str(body)).body == {"job": JOB} and not load(str(body)).wrapped


def test_yaml_by_extension_or_by_content(tmp_path: Path) -> None:
    text = "name: j\nnodes:\n  - id: a\n    command: echo a\n"
    for name in ("dag.yaml", "dag.yml", "dag.txt"):
        (tmp_path / name).write_text(text)
        assert load(str(tmp_path / name)).body == {"job": JOB}
    assert load("-", io.BytesIO(text.encode())).body == {"job": JOB}
    assert load("-", io.BytesIO(json.dumps({"job": JOB}).encode())).body == {"job": JOB}


def test_a_utf8_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(JOB).encode())
    assert load(str(path)).body == {"job": JOB}


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "name": "j",\n  "nodes": [,]\n}\n')
    message = problem(str(path))
    assert message.startswith(f"{path}: invalid JSON at line 3, column 13")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: j\nnodes:\n  - id: a\n   command: b\n")
    assert f"{path}: invalid YAML at line 4" in problem(str(path))


def test_missing_directory_empty_and_non_utf8(tmp_path: Path) -> None:
    assert problem(str(tmp_path / "nope.json")) == f"{tmp_path / 'nope.json'}: no such file"
    assert problem(str(tmp_path)) == f"{tmp_path}: is a directory"
    (tmp_path / "empty.yaml").write_text("  \n")
    assert problem(str(tmp_path / "empty.yaml")).endswith("empty")
    assert "not UTF-8" in problem("-", b"name: \xff\n")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[1, 2]", "not a list"),
        ('"job"', "not a string"),
        ("- a\n- b\n", "not a list"),
        ("~\n", "not nothing"),
        ("42\n", "not a number"),
    ],
)
def test_the_top_level_must_be_an_object(text: str, words: str) -> None:
    message = problem("-", text.encode())
    assert "the top level must be an object" in message and words in message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("name: j\nnodes:\n  - id: a\n    command: x\n    env: {1: b}\n", "/nodes/0/env"),
        ("name: 2024-01-01\nnodes: []\n", "/name"),
        ("name: j\nnodes: [.nan]\n", "/nodes/0"),
        ("name: !!binary aGVsbG8=\nnodes: []\n", "/name"),
    ],
)
def test_yaml_that_is_not_plain_json_is_refused_where_it_is(text: str, where: str) -> None:
    assert f"at {where}" in problem("-", text.encode())


def test_json_constants_are_not_numbers() -> None:
    assert "NaN is not a JSON number" in problem("-", b'{"name": NaN}')


def test_python_tags_are_refused_by_safe_load(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f"name: !!python/object/apply:os.system ['touch {marker}']\nnodes: []\n"
    assert "invalid YAML" in problem("-", text.encode())
    assert not marker.exists()


def test_a_billion_laughs_stops_at_a_bound() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    message = problem("-", "\n".join(lines).encode())
    assert "more than" in message and "values" in message


def test_multiple_yaml_documents_are_refused() -> None:
    assert "invalid YAML" in problem("-", b"name: a\n---\nname: b\n")
