"""gRPC transport credentials from PEM files: TLS for the scheduler's server, and TLS or
mutual TLS for the api's and worker's channel. Unreadable files are a one-line
`ConfigurationError` at start, never a handshake failure later."""

from __future__ import annotations

from pathlib import Path

import grpc

from minitemporal.errors import ConfigurationError


def _read(path: str, setting: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {setting} {path}: {exc.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ConfigurationError(f"{setting} {path} is not a PEM file")
    return data


def _check_pair(cert: str | None, key: str | None, cert_setting: str, key_setting: str) -> None:
    if (cert is None) != (key is None):
        raise ConfigurationError(f"set both {cert_setting} and {key_setting}, or neither")


def server_credentials(
    cert: str | None, key: str | None, client_ca: str | None
) -> grpc.ServerCredentials | None:
    """TLS for the scheduler when a certificate is set; with `client_ca`, clients must
    present a certificate signed by it. None: plaintext."""
    _check_pair(cert, key, "MINITEMPORAL_GRPC_TLS_CERT", "MINITEMPORAL_GRPC_TLS_KEY")
    if cert is None or key is None:
        if client_ca is not None:
            raise ConfigurationError(
                "MINITEMPORAL_GRPC_TLS_CLIENT_CA needs MINITEMPORAL_GRPC_TLS_CERT and _KEY"
            )
        return None
    pair = (_read(key, "MINITEMPORAL_GRPC_TLS_KEY"), _read(cert, "MINITEMPORAL_GRPC_TLS_CERT"))
    roots = _read(client_ca, "MINITEMPORAL_GRPC_TLS_CLIENT_CA") if client_ca else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=roots, require_client_auth=roots is not None
    )


def channel_credentials(
    ca: str | None, cert: str | None, key: str | None
) -> grpc.ChannelCredentials | None:
    """TLS towards the scheduler when a CA (or a client certificate) is set. None: plaintext."""
    _check_pair(cert, key, "MINITEMPORAL_GRPC_TLS_CLIENT_CERT", "MINITEMPORAL_GRPC_TLS_CLIENT_KEY")
    if ca is None and cert is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "MINITEMPORAL_GRPC_TLS_CA") if ca else None,
        private_key=_read(key, "MINITEMPORAL_GRPC_TLS_CLIENT_KEY") if key else None,
        certificate_chain=_read(cert, "MINITEMPORAL_GRPC_TLS_CLIENT_CERT") if cert else None,
    )
