"""The domain's errors. Each class carries its HTTP status, gRPC code and problem `type`.

The mapping lives here and nowhere else: the REST layer renders any `MinitemporalError` as an
RFC 9457 problem body; the gRPC servicer aborts with its code and the client raises the same
class again from the call's trailing metadata, so a 422 found by the scheduler reaches the REST
client unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar

import grpc

PROBLEM_BASE = "https://minitemporal.dev/problems/"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input, located by a JSON pointer into the request body."""

    pointer: str
    message: str


class MinitemporalError(Exception):
    """Base of every error the system reports on purpose."""

    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"
    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(self, detail: str = "", problems: Sequence[Problem] = ()) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.problems = tuple(problems)

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.slug

    def to_problem(self, instance: str | None = None) -> dict[str, object]:
        body: dict[str, object] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.http_status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.problems:
            body["errors"] = [asdict(p) for p in self.problems]
        return body


class InvalidInput(MinitemporalError):
    """The request is well-formed JSON but describes something we cannot accept."""

    slug = "invalid-input"
    title = "Invalid input"
    http_status = 422
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class MalformedRequest(MinitemporalError):
    """The body is not JSON, not UTF-8, or a query parameter does not parse."""

    slug = "malformed-request"
    title = "Malformed request"
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class PayloadTooLarge(MinitemporalError):
    """The body is larger than the configured limit; it was not read."""

    slug = "payload-too-large"
    title = "Payload too large"
    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotFound(MinitemporalError):
    """No such job (or node, or attempt)."""

    slug = "not-found"
    title = "Not found"
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class Conflict(MinitemporalError):
    """The request contradicts the current state (e.g. cancelling a finished job)."""

    slug = "conflict"
    title = "Conflict"
    http_status = 409
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class AccessError(MinitemporalError):
    """Base of the two refusals of an authenticating server; may carry an HTTP challenge."""

    def __init__(
        self, detail: str = "", problems: Sequence[Problem] = (), *, challenge: str | None = None
    ) -> None:
        super().__init__(detail, problems)
        self.challenge = challenge  # the WWW-Authenticate value (RFC 6750), if any


class Unauthenticated(AccessError):
    """No credentials, or credentials that match nothing."""

    slug = "unauthenticated"
    title = "Unauthenticated"
    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(AccessError):
    """Valid credentials without the scope the operation needs."""

    slug = "forbidden"
    title = "Forbidden"
    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class RequestTimeout(MinitemporalError):
    """The client took too long to send its request; nothing was done."""

    slug = "request-timeout"
    title = "Request timeout"
    http_status = 408
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(MinitemporalError):
    """A dependency (PostgreSQL, Redis, the scheduler) does not answer; retry later."""

    slug = "unavailable"
    title = "Service unavailable"
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class CredentialsRejected(Unavailable):
    """A scheduler refused this process's own credentials (its gRPC secret or certificate):
    a deployment mistake, not the caller's, so clients see 503 and the log says what to fix."""

    slug = "unavailable"


class ConfigurationError(MinitemporalError):
    """The settings cannot work together; raised at start, printed as one line."""

    slug = "configuration"
    title = "Configuration error"


_BY_SLUG: dict[str, type[MinitemporalError]] = {
    cls.slug: cls
    for cls in (
        MinitemporalError,
        InvalidInput,
        MalformedRequest,
        PayloadTooLarge,
        NotFound,
        Conflict,
        Unauthenticated,
        PermissionDenied,
        RequestTimeout,
        Unavailable,
    )
}

GRPC_ERROR_KEY = "minitemporal-error-bin"


def from_problem(body: object, status: int) -> MinitemporalError:
    """The error a problem document (as `to_problem` wrote it) stands for, for REST clients:
    its class from the `type`, else from the HTTP status. Tolerates any JSON: it comes from
    the network."""
    doc = body if isinstance(body, dict) else {}
    kind = doc.get("type")
    slug = kind.removeprefix(PROBLEM_BASE) if isinstance(kind, str) else ""
    cls = _BY_SLUG.get(slug) or next(
        (c for c in _BY_SLUG.values() if c.http_status == status), MinitemporalError
    )
    detail = doc.get("detail")
    problems = [
        Problem(p["pointer"], p["message"])
        for p in doc.get("errors") or ()
        if isinstance(p, dict)
        and isinstance(p.get("pointer"), str)
        and isinstance(p.get("message"), str)
    ]
    return cls(detail if isinstance(detail, str) else "", problems)


def encode_for_grpc(error: MinitemporalError) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata that lets the client rebuild the exact error."""
    payload = {
        "slug": error.slug,
        "detail": error.detail,
        "problems": [asdict(p) for p in error.problems],
    }
    return ((GRPC_ERROR_KEY, json.dumps(payload).encode()),)


def decode_from_grpc(
    code: grpc.StatusCode, details: str | None, trailing: Sequence[tuple[str, object]] | None
) -> MinitemporalError:
    """The inverse of `encode_for_grpc`; transport failures become `Unavailable`."""
    for key, value in trailing or ():
        if key == GRPC_ERROR_KEY and isinstance(value, bytes):
            try:
                payload = json.loads(value)
                cls = _BY_SLUG.get(payload["slug"], MinitemporalError)
                problems = [Problem(**p) for p in payload.get("problems", [])]
                return cls(payload.get("detail", ""), problems)
            except (ValueError, KeyError, TypeError):
                break
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"scheduler unavailable: {details or code.name}")
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(details or "")
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(details or "")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return PayloadTooLarge(details or "")
    return MinitemporalError(f"scheduler error: {code.name}: {details or ''}")
