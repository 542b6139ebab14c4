"""The end of a NATS connect whose authorization is slow (the federation's auth callout at a
connect storm): nats-py's handshake sends CONNECT and PING and reads one line, taking only PONG or
-ERR. nats-server sends every client its first PING 2 s into the connection, so when the callout
answers later than that the client reads that PING and returns from `nats.connect` neither
connected nor failed (status CONNECTING, `is_connected` False) — the server's own budget for the
callout being `authorization.timeout` (federation/nats_config.py AUTH_TIMEOUT_S). Here a flush
waits for the server's answer: its PONGs come once the connection is authorized, a refusal
closes it."""
from __future__ import annotations

import contextlib

from nats.aio.client import Client
from nats.errors import Error as NatsError

__all__ = ["finish_slow_authorization"]


async def finish_slow_authorization(nc: Client, timeout_s: float) -> None:
    """Return once `nc` is connected; raise (and close it) when the server refused or went quiet."""
    if nc.is_connected:
        return
    try:
        if nc.is_closed:
            raise NatsError("the connection closed during its handshake")
        await nc.flush(timeout=timeout_s)
        if nc.is_closed:
            raise NatsError("the connection closed during its handshake")
    except Exception as exc:
        refused = nc.last_error
        with contextlib.suppress(Exception):
            await nc.close()
        if refused is not None and refused is not exc:
            raise NatsError(f"nats: {refused}") from exc
        raise
    if nc._status == Client.CONNECTING:   # nats-py has no public way to finish its own handshake
        nc._status = Client.CONNECTED
