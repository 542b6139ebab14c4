"""Free ports on 127.0.0.1 for the servers tests start (every test server listens on loopback only)."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A port nobody listens on now (the kernel's pick); a test binds it soon after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
