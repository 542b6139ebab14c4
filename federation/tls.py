"""The server's TLS context, built in one place."""
from __future__ import annotations

import os
import ssl

from federation.config import FederationConfig


def server_ssl_context(cert: str | os.PathLike, key: str | os.PathLike,
                       client_ca: str | os.PathLike | None = None) -> ssl.SSLContext:
    """TLS 1.2+ with the certificate chain and key; with `client_ca`, clients must show a
    certificate signed by it (mutual TLS, e.g. for edge devices)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(os.fspath(cert), os.fspath(key))
    if client_ca is not None:
        context.load_verify_locations(cafile=os.fspath(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def ssl_context_for(config: FederationConfig) -> ssl.SSLContext | None:
    if not config.tls:
        return None
    return server_ssl_context(config.tls_cert, config.tls_key, config.tls_client_ca)
