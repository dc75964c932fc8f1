"""Bearer tokens for the REST api: configured as hashes, each with scopes.

A token is `mt_` and 43 random URL-safe characters (256 bits). The server never holds the
token itself, only its SHA-256 (a slow hash buys nothing for random 256-bit secrets), in
entries `NAME:SHA256HEX:SCOPES` where SCOPES is a comma list of

    read     GET /v1/jobs, GET /v1/jobs/{id}
    submit   POST /v1/jobs, POST /v1/jobs/{id}/cancel
    metrics  GET /metrics, when MINITEMPORAL_METRICS_AUTH is on

Entries come from MINITEMPORAL_API_TOKENS (separated by spaces, newlines or `;`) and from
MINITEMPORAL_API_TOKENS_FILE (one a line, `#` starts a comment). `minitemporal token create`
makes a token and prints its entry.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import falcon
import falcon.asgi

from minitemporal.errors import ConfigurationError, PermissionDenied, Unauthenticated

SCOPES = ("read", "submit", "metrics")
TOKEN_PREFIX = "mt_"  # noqa: S105 (a prefix, not a secret)
REALM = "minitemporal"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_HEX = re.compile(r"[0-9a-f]{64}")
_ENTRY_SEPARATORS = re.compile(r"[\s;]+")


@dataclass(frozen=True, slots=True)
class ApiToken:
    name: str
    digest: bytes  # SHA-256 of the token
    scopes: frozenset[str]

    def entry(self) -> str:
        return f"{self.name}:{self.digest.hex()}:{','.join(sorted(self.scopes))}"


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def new_token(name: str, scopes: Iterable[str]) -> tuple[str, ApiToken]:
    """A fresh token and its configuration entry (raises ConfigurationError on bad input)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    entry = parse_entry(f"{name}:{hash_token(token).hex()}:{','.join(scopes)}", "the arguments")
    return token, entry


def parse_entry(text: str, where: str) -> ApiToken:
    parts = text.split(":")
    if len(parts) != 3:
        raise ConfigurationError(
            f"{where}: a token entry is NAME:SHA256HEX:SCOPES, got {_shape(text)}"
        )
    name, digest, scope_text = parts
    if not _NAME.fullmatch(name):
        raise ConfigurationError(f"{where}: token name {name!r} must match {_NAME.pattern}")
    if not _HEX.fullmatch(digest.lower()):
        raise ConfigurationError(
            f"{where}: token {name!r}: the hash must be 64 hex digits (a SHA-256), "
            "not the token itself; `minitemporal token create` prints the entry"
        )
    scopes = frozenset(s.strip() for s in scope_text.split(",") if s.strip())
    unknown = scopes - set(SCOPES)
    if not scopes or unknown:
        raise ConfigurationError(
            f"{where}: token {name!r}: scopes must be a comma list of {', '.join(SCOPES)}"
        )
    return ApiToken(name, bytes.fromhex(digest), scopes)


def _shape(text: str) -> str:
    """Describe a bad entry without echoing it: it may be a token pasted by mistake."""
    return f"{text.count(':') + 1} colon-separated part(s)"


class TokenSet:
    """The configured tokens; looks a presented token up in constant time."""

    def __init__(self, tokens: Iterable[ApiToken]) -> None:
        self._tokens = tuple(tokens)
        names = [t.name for t in self._tokens]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigurationError(f"duplicate API token name(s): {', '.join(duplicates)}")

    def __len__(self) -> int:
        return len(self._tokens)

    @classmethod
    def load(cls, text: str | None, file: str | None) -> TokenSet:
        entries = [
            parse_entry(e, "MINITEMPORAL_API_TOKENS")
            for e in _ENTRY_SEPARATORS.split(text or "")
            if e
        ]
        if file:
            try:
                lines = Path(file).read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigurationError(
                    f"cannot read MINITEMPORAL_API_TOKENS_FILE {file}: {exc}"
                ) from None
            for number, line in enumerate(lines, 1):
                line = line.split("#", 1)[0].strip()
                if line:
                    entries.append(parse_entry(line, f"{file} line {number}"))
        return cls(entries)

    def find(self, token: str) -> ApiToken | None:
        """The token's entry, comparing every configured hash (no early exit)."""
        digest = hash_token(token)
        found = None
        for candidate in self._tokens:
            if hmac.compare_digest(candidate.digest, digest):
                found = candidate
        return found


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class AuthMiddleware:
    """Every routed request but the open routes needs a known token, and its route's scope.

    `scopes` maps (route template, method) to the scope it needs; a method a route does not
    have needs only a valid token (then 405). Unrouted paths answer 404 without a token: the
    routes are no secret, /openapi.json lists them.
    """

    def __init__(
        self, tokens: TokenSet, scopes: Mapping[tuple[str, str], str], open_routes: set[str]
    ) -> None:
        self._tokens = tokens
        self._scopes = scopes
        self._open = open_routes

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        params: dict[str, object],
    ) -> None:
        template = req.uri_template or ""
        if template in self._open:
            return
        presented = _bearer(req.get_header("Authorization"))
        if presented is None:
            raise Unauthenticated(
                "send an API token: Authorization: Bearer <token>",
                challenge=f'Bearer realm="{REALM}"',
            )
        token = self._tokens.find(presented)
        if token is None:
            raise Unauthenticated(
                "the API token is not valid",
                challenge=f'Bearer realm="{REALM}", error="invalid_token"',
            )
        req.context.token_name = token.name
        needed = self._scopes.get((template, req.method))
        if needed is not None and needed not in token.scopes:
            raise PermissionDenied(
                f"the token {token.name!r} lacks the {needed!r} scope",
                challenge=f'Bearer realm="{REALM}", error="insufficient_scope", scope="{needed}"',
            )
