"""API tokens, the listen-address rule and the token command (pure: no servers)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from minitemporal.api.auth import TokenSet, hash_token, new_token, parse_entry
from minitemporal.app import check_exposure
from minitemporal.cli import main
from minitemporal.config import Settings
from minitemporal.errors import ConfigurationError


def test_a_new_token_is_found_by_its_entry_only() -> None:
    secret, entry = new_token("ci", ["read", "submit"])
    assert secret.startswith("mt_") and len(secret) > 40
    assert entry.digest == hashlib.sha256(secret.encode()).digest()
    line = entry.entry()
    assert secret not in line and line.startswith("ci:") and line.endswith(":read,submit")
    tokens = TokenSet.load(f"{line} other:{'0' * 64}:read", None)
    found = tokens.find(secret)
    assert found is not None and found.name == "ci" and found.scopes == {"read", "submit"}
    assert tokens.find(secret + "x") is None
    assert tokens.find("") is None


def test_entries_from_a_file_with_comments(tmp_path: Path) -> None:
    a, entry_a = new_token("a", ["read"])
    b, entry_b = new_token("b", ["metrics"])
    file = tmp_path / "tokens"
    file.write_text(f"# team tokens\n{entry_a.entry()}  # dashboard\n\n{entry_b.entry()}\n")
    tokens = TokenSet.load(None, str(file))
    assert len(tokens) == 2
    assert tokens.find(a).name == "a" and tokens.find(b).name == "b"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("ci", "NAME:SHA256HEX:SCOPES"),
        ("ci:mt_secretvalue:read", "64 hex digits"),
        (f"ci:{'a' * 64}:admin", "scopes"),
        (f"ci:{'a' * 64}:", "scopes"),
        (f"bad name:{'a' * 64}:read", "token name"),
    ],
)
def test_bad_entries_are_one_line_errors_that_do_not_echo_secrets(entry: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        parse_entry(entry, "MINITEMPORAL_API_TOKENS")
    assert "mt_secretvalue" not in caught.value.detail


def test_duplicate_names_and_unreadable_files_are_refused(tmp_path: Path) -> None:
    entry = f"ci:{'a' * 64}:read"
    with pytest.raises(ConfigurationError, match="duplicate"):
        TokenSet.load(f"{entry};{entry}", None)
    with pytest.raises(ConfigurationError, match="cannot read"):
        TokenSet.load(None, str(tmp_path / "missing"))


def test_hash_is_sha256_hex_of_the_token() -> None:
    assert hash_token("abc").hex() == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_without_tokens_is_allowed(host: str) -> None:
    check_exposure(Settings(roles="api", api_host=host), TokenSet(()))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "api.example.com"])
def test_other_addresses_without_tokens_are_refused(host: str) -> None:
    with pytest.raises(ConfigurationError, match="minitemporal token create"):
        check_exposure(Settings(roles="api", api_host=host), TokenSet(()))
    _, entry = new_token("ci", ["read"])
    check_exposure(Settings(roles="api", api_host=host), TokenSet([entry]))


def test_grpc_beyond_loopback_needs_a_secret() -> None:
    with pytest.raises(ConfigurationError, match="MINITEMPORAL_GRPC_SECRET"):
        check_exposure(Settings(roles="scheduler", grpc_host="0.0.0.0"), TokenSet(()))
    check_exposure(Settings(roles="scheduler", grpc_host="0.0.0.0", grpc_secret="s"), TokenSet(()))


def test_insecure_no_auth_overrides_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_exposure(
            Settings(roles="all", api_host="0.0.0.0", grpc_host="0.0.0.0", insecure_no_auth=True),
            TokenSet(()),
        )
    assert "--insecure-no-auth" in caplog.text


def test_token_create_prints_a_token_and_a_working_entry() -> None:
    result = CliRunner().invoke(
        main, ["token", "create", "--name", "ci", "--scopes", "read,submit"]
    )
    assert result.exit_code == 0, result.output
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if line)
    secret, entry = lines["token"].strip(), lines["entry"].strip()
    found = TokenSet.load(entry, None).find(secret)
    assert found is not None and found.scopes == {"read", "submit"}
    hashed = CliRunner().invoke(main, ["token", "hash"], input=secret + "\n")
    assert hashed.exit_code == 0 and hashed.stdout.strip() == entry.split(":")[1]


def test_token_create_refuses_unknown_scopes() -> None:
    result = CliRunner().invoke(main, ["token", "create", "--name", "ci", "--scopes", "root"])
    assert result.exit_code == 2
    assert "scopes must be a comma list" in result.output
