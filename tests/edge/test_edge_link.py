"""The link: handshake, heartbeat and health, ping/pong, hostile frames, reconnecting with backoff."""
import asyncio
import random
import time

import msgpack
import pytest

from edge_engine.config import Reconnect
from edge_engine.link import backoff_delay, connect_url
from edge_engine.testing import FakeFederation
from streamql import wire


async def test_hello_announces_the_edge(fed, edge_config, start_edge):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    hello = conn.hello
    assert hello["edge"] == "wl-1" and hello["versions"] == [1] and hello["software"].startswith("streamql-edge")
    assert hello["metadata"] == {"kind": "wheel loader", "region": "US"}
    caps = hello["capabilities"]
    assert (caps["ram_kb"], caps["flash_kb"], caps["cpu"]) == (1024, 8192, "cortex-a53")
    assert {s["name"] for s in caps["signals"]} == {"vibration", "outside_temperature"}
    assert caps["runtimes"]["numpy"] and caps["runtimes"]["tflite"] and caps["runtimes"]["python"]
    assert hello["models"] == {} and hello["restarts"] == 0
    assert hello["resume"]["log"] and hello["resume"]["dropped"] == 0


async def test_health_on_the_heartbeat_and_pings_both_ways(fed, edge_config, start_edge):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    first = await conn.next("health", start=0)
    second = await conn.next("health", start=conn.frames.index(first) + 1, timeout=3)
    assert 0.3 < second["uptime_s"] - first["uptime_s"] < 1.5          # heartbeat_s from welcome: 0.5
    for key in ("time", "restarts", "cpu_percent", "memory_kb", "queues", "link", "buffer", "errors"):
        assert key in second
    assert second["memory_kb"] > 1000 and second["link"]["connected"]
    assert set(second["queues"]) >= {"buffer", "publish_unacked", "fragments"}
    assert (await conn.next("ping", start=0))["nonce"] >= 1
    third = await conn.next("health", start=conn.frames.index(second) + 1, timeout=3)
    assert third["link"]["rtt_ms"] >= 0                                 # its pings were answered
    await conn.send("ping", nonce=77, time=123.5)
    pong = await conn.next("pong", start=0)
    assert pong["nonce"] == 77 and pong["time"] == 123.5


HOSTILE = [
    (b"\xc1\xc1 not msgpack", "malformed", None),
    (msgpack.packb([1, 2, 3]), "malformed", None),
    (msgpack.packb({"t": "ping", "nonce": 1}), "malformed", None),                       # no version
    (msgpack.packb({"v": 1, "t": "query", "qid": "q", "source": "select 1;", "limits": {},
                    "credit": "lots"}), "bad_field", "credit"),
    (msgpack.packb({"v": 1, "t": "deploy", "did": "d"}), "bad_field", "model"),
    (msgpack.packb({"v": 1, "t": "zzz"}), "unknown_type", "zzz"),
    (msgpack.packb({"v": 1, "t": "hello", "edge": "x", "software": "", "metadata": {}, "capabilities": {},
                    "models": {}, "restarts": 0}), "unexpected_type", "hello"),
    (b"\xdd\xff\xff\xff\xff", "malformed", None),                                          # a 4-billion-item array claim
    (b"\x91" * 5000 + b"\xc0", "malformed", None),                                          # nesting 5000 deep
    (msgpack.packb({"v": 1, "t": "rows", "qid": "q", "seq": 0, "n": 3, "cols": [[1]]}), "bad_field", "cols[0]"),
]


async def test_hostile_frames_are_answered_and_the_daemon_keeps_working(fed, edge_config, start_edge):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    for data, code, ref in HOSTILE:
        start = len(conn.frames)
        await conn.send_raw(data)
        error = await conn.next("error", start=start)
        assert error["code"] == code, data[:40]
        if ref is not None:
            assert error["ref"] == ref
    start = len(conn.frames)
    await conn.send_text("hello?")
    assert (await conn.next("error", start=start))["code"] == "malformed"
    # an error frame is never answered with an error, even a bad one
    start = len(conn.frames)
    await conn.send("error", code="internal", message="the federation had a problem")
    await conn.send_raw(msgpack.packb({"v": 1, "t": "error", "code": 5}))
    rows, end = await conn.run_query("select 40 + 2;")
    assert rows == [42] and end["outcome"] == "ok"
    assert not conn.of_type("error")[len(HOSTILE) + 1:]
    assert conn is fed.connections["wl-1"]                    # the same connection throughout
    health = await conn.next("health", start=start)
    assert any("bad frame" in e["message"] for e in health["errors"])   # logged, reported in health
    assert daemon.link.connected.is_set()


async def test_an_unknown_version_is_answered_in_v1_and_closed_then_the_edge_reconnects(fed, edge_config,
                                                                                         start_edge):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    await conn.send_raw(msgpack.packb({"v": 2, "t": "ping", "nonce": 1}))
    error = await conn.next("error", start=0)
    assert error.v == 1 and error["code"] == "unsupported_version" and error["supported"] == [1] and error["fatal"]
    await asyncio.wait_for(conn.closed.wait(), 5)
    assert conn.ws.close_code == wire.CLOSE_CODES["unsupported_version"]
    again = await fed.connection("wl-1", newer_than=conn)
    rows, _ = await again.run_query("select 1;")
    assert rows == [1]


async def test_a_frame_over_the_size_limit_is_refused_with_1009(fed, edge_config, start_edge):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    await conn.send_raw(b"\x00" * (wire.MAX_FRAME_BYTES + 10))
    error = await conn.next("error", start=0)
    assert error["code"] == "too_large" and error["fatal"]
    await asyncio.wait_for(conn.closed.wait(), 5)
    assert conn.ws.close_code == wire.CLOSE_CODES["too_large"]
    await fed.connection("wl-1", newer_than=conn)


async def test_a_flood_of_bad_frames_closes_the_connection_with_4000(fed, edge_config, start_edge):
    await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    for _ in range(100):
        await conn.send_raw(b"\xc1")
    await asyncio.wait_for(conn.closed.wait(), 5)
    assert conn.ws.close_code == wire.CLOSE_CODES["protocol_error"]
    await fed.connection("wl-1", newer_than=conn)


async def test_refused_tokens_and_welcomes_are_retried_with_backoff(edge_config, start_edge):
    fed = FakeFederation(tokens={"right-token": "wl-1"}, heartbeat_s=0.5)
    await fed.start()
    try:
        daemon = await start_edge(edge_config(federation=fed.url, token="wrong-token"))
        await asyncio.sleep(1.0)
        assert fed.refused_auth >= 2 and "401" in daemon.link.last_error
        assert daemon.link.attempts >= 2 and not daemon.link.connected.is_set()
        daemon.link.token = "right-token"
        await fed.connection("wl-1")
    finally:
        await fed.stop()
    refusing = FakeFederation(heartbeat_s=0.5, accept=lambda hello: "edge disabled")
    await refusing.start()
    try:
        daemon = await start_edge(edge_config(federation=refusing.url, id="dt-2", store=daemon.config.store.parent / "b"))
        await asyncio.sleep(0.8)
        assert "edge disabled" in daemon.link.last_error and not daemon.link.connected.is_set()
    finally:
        await refusing.stop()


async def test_a_silent_federation_is_left_and_reconnected(edge_config, start_edge):
    fed = FakeFederation(heartbeat_s=0.3, answer_pings=False)
    await fed.start()
    try:
        daemon = await start_edge(edge_config(federation=fed.url))
        conn = await fed.connection("wl-1")
        await asyncio.wait_for(conn.closed.wait(), 4)       # 3 × 0.3 s without a frame
        assert "nothing heard" in daemon.link.last_error
        await fed.connection("wl-1", newer_than=conn)
    finally:
        await fed.stop()


async def test_the_federation_going_away_and_coming_back(fed, edge_config, start_edge):
    daemon = await start_edge(edge_config())
    conn = await fed.connection("wl-1")
    await fed.stop()
    await asyncio.sleep(0.8)                                 # several refused attempts meanwhile
    assert not daemon.link.connected.is_set() and daemon.link.attempts >= 2
    await fed.start()                                        # same port
    conn2 = await fed.connection("wl-1", newer_than=conn)
    health = await conn2.next("health", start=0)
    assert health["link"]["reconnects"] >= 1
    assert conn2.hello["restarts"] == 0


def test_backoff_is_full_jitter_capped_and_exponential():
    rng = random.Random(1)
    settings = Reconnect(initial_s=0.5, max_s=30.0)
    for attempt, cap in ((0, 0.5), (1, 1.0), (3, 4.0), (6, 30.0), (40, 30.0)):
        delays = [backoff_delay(attempt, settings, rng) for _ in range(400)]
        assert 0.0 <= min(delays) and max(delays) <= cap
        assert max(delays) > 0.8 * cap and min(delays) < 0.2 * cap      # spread over the whole range


@pytest.mark.parametrize("given, url", [
    ("ws://h:8080", "ws://h:8080/v1/edges/connect"),
    ("http://h:8080/", "ws://h:8080/v1/edges/connect"),
    ("https://h/v1/edges/connect", "wss://h/v1/edges/connect"),
    ("wss://h/base", "wss://h/base/v1/edges/connect"),
])
def test_connect_url(given, url):
    assert connect_url(given) == url


def _certificate(prefix, name, issuer=None, ca=False):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_cert, issuer_key = issuer or (None, key)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_cert.subject if issuer_cert else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    prefix.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    prefix.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    return cert, key, prefix.with_suffix(".crt"), prefix.with_suffix(".key")


async def test_wss_with_a_ca_file_and_a_client_certificate(tmp_path, edge_config, start_edge):
    import dataclasses
    import ssl

    from edge_engine.config import Tls
    ca_cert, ca_key, ca_file, _ = _certificate(tmp_path / "ca", "test CA", ca=True)
    _, _, server_cert, server_key = _certificate(tmp_path / "server", "127.0.0.1", (ca_cert, ca_key))
    _, _, client_cert, client_key = _certificate(tmp_path / "edge", "wl-1", (ca_cert, ca_key))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(server_cert, server_key)
    server.verify_mode = ssl.CERT_REQUIRED                  # mutual TLS
    server.load_verify_locations(ca_file)
    fed = FakeFederation(heartbeat_s=0.5)
    await fed.start(ssl_context=server)
    try:
        assert fed.url.startswith("wss://")
        without = await start_edge(edge_config(federation=fed.url, store=tmp_path / "a", tls=Tls(ca_file=ca_file)))
        await asyncio.sleep(0.5)
        assert not without.link.connected.is_set()           # no client certificate: refused
        await without.stop()
        config = edge_config(federation=fed.url, store=tmp_path / "b")
        config = dataclasses.replace(config, tls=Tls(ca_file=ca_file, cert_file=client_cert, key_file=client_key))
        await start_edge(config)
        conn = await fed.connection("wl-1")
        rows, _ = await conn.run_query("select 6 * 7;")
        assert rows == [42]
    finally:
        await fed.stop()


async def test_an_edge_whose_own_loop_was_held_does_not_take_it_for_a_silent_federation(edge_config, start_edge):
    """A simulator process with thousands of edges can hold its loop past three heartbeats: the
    federation's frames then wait unread in the socket, and the edge must not leave it for that."""
    fed = FakeFederation(heartbeat_s=0.3)
    await fed.start()
    try:
        daemon = await start_edge(edge_config(federation=fed.url))
        conn = await fed.connection("wl-1")
        await asyncio.sleep(0.7)        # a pong or two came back: the link is alive
        time.sleep(1.5)                  # this process's loop held for five heartbeats
        await asyncio.sleep(1.5)        # the next beats: pings answered again
        assert not conn.closed.is_set(), daemon.link.last_error
    finally:
        await fed.stop()
