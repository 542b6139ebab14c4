"""Per-edge NATS credentials backed by the registry: the auth callout service of a federation node.

    service = NatsAuthService(registry, security, sessions=app[SESSIONS])
    await service.connect(["nats://nats-1:4222", ...])   # its own node and system connections
    ...
    await service.close()

(or `start(node_nc, sys_nc)` / `stop()` on connections of the caller's). A node's other NATS
connections (the hub's) use `node_connect_options(security)`.

nats-server sends every connection that is not a node's own to `$SYS.REQ.USER.AUTH` as a JWT
signed by the server (federation/nats_config.py configures it). The service (a queue group: one
node of the federation answers each connection) reads the device token the client presented (the
NATS connect token, or the MQTT password), checks it as the HTTP API does (federation.auth:
sha256 lookup in the registry, revoked tokens refused) and answers with a user JWT signed by the
issuer account key, carrying the permissions of that device and nothing else:

    NATS edge   publish  sql.up.<edge>.>, sql.pub.<edge>, $KV.sql_presence.<edge>,
                         the JetStream API calls of those and of reading the sql_bundles object store
                subscribe sql.down.<edge>, _INBOX_<edge>.>
    MQTT device publish  streamql.<device>.>   (MQTT topic streamql/<device>/<signal>)
                subscribe streamql.<device>.>
    gateway     an edge listed in nats-security.json's `mqtt_gateways` may also subscribe
                streamql.> (it turns MQTT readings into signals, edge_engine/mqtt_signals.py);
                the list is the operator's, not registry metadata (edges announce their own)

<edge>/<device> is the id escaped as one subject token (nats_subjects.encode_token). Only device
tokens connect: a client's token (read/deploy/admin) is for the HTTP API.

Revocation: each authorized connection is registered in the federation's Sessions under its token
id with a closer that kicks it (`$SYS.REQ.SERVER.<server>.KICK`, system account), so the revoke
route's `sessions.revoke` disconnects it at once and the revocation sweep catches tokens revoked by
another process. Every revocation a node announces goes to the other nodes on `sql.ctl.revoked`
(they revoke the token's sessions they hold: NATS connections they authorized, and clients'
WebSockets and requests), so a token revoked on any node is cut off everywhere within a round trip.
`kick_token` finds a token's connections on every server of the cluster (connz by user name).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from federation import nats_jwt, nats_subjects
from federation.auth import Principal, Role, authenticate, principal_of, token_digest
from federation.errors import Unauthorized
from federation.nats_config import ACCOUNT, NatsSecurity
from federation.registry import Registry
from federation.sessions import Sessions

log = logging.getLogger("streamql.federation.nats_auth")

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
AUTH_QUEUE = "streamql-auth"
MQTT_PREFIX = "streamql"
AUTH_SERVICE: web.AppKey["NatsAuthService"] = web.AppKey("nats_auth_service")
REVOKED_SUBJECT = "sql.ctl.revoked"   # {"token_id", "reason", "node"} or {"device_id", "node"}
CONNZ_WINDOW_S = 0.3   # how long kick_token listens for the servers' connz answers
BATCH = 64             # authorization requests answered together (one registry query)
WORKERS = 2            # batches in flight at once (PostgreSQL: each in a worker thread)


@dataclass(frozen=True, slots=True)
class Grant:
    """What the callout decided for one connection."""

    name: str          # the NATS user name: t<token id>:<device id> (connz and kicks find it by this)
    token_id: int
    device_id: str
    permissions: dict[str, Any]


def user_name(token_id: int, device_id: str) -> str:
    return f"t{token_id}:{device_id}"


def _js_api(action: str, stream: str) -> list[str]:
    return [f"$JS.API.{action}.{stream}", f"$JS.API.{action}.{stream}.>"]


def edge_permissions(device_id: str, *, gateway: bool = False) -> dict[str, Any]:
    edge = nats_subjects.encode_token(device_id)
    bundles = f"OBJ_{nats_subjects.BUNDLE_BUCKET}"
    presence = f"KV_{nats_subjects.PRESENCE_BUCKET}"
    publish = [nats_subjects.up_edge_wildcard(device_id), nats_subjects.publish(device_id),
               nats_subjects.presence_subject(device_id),
               f"$JS.API.STREAM.INFO.{presence}",
               # reading a bundle: object info, then its chunks through an ordered consumer
               f"$JS.API.STREAM.INFO.{bundles}", *_js_api("STREAM.MSG.GET", bundles),
               "$JS.API.STREAM.NAMES",       # nats-py finds the chunks' stream by subject (names only)
               *_js_api("DIRECT.GET", bundles), *_js_api("CONSUMER.CREATE", bundles),
               *_js_api("CONSUMER.DELETE", bundles), *_js_api("CONSUMER.INFO", bundles),
               f"$JS.FC.{bundles}.>", f"$JS.ACK.{bundles}.>"]
    subscribe = [nats_subjects.down(device_id), f"{nats_subjects.inbox_prefix(device_id)}.>"]
    if gateway:
        subscribe.append(f"{MQTT_PREFIX}.>")
    assert "*" not in edge and ">" not in edge and "." not in edge
    return {"pub": {"allow": publish}, "sub": {"allow": subscribe}}


def mqtt_permissions(device_id: str) -> dict[str, Any]:
    own = f"{MQTT_PREFIX}.{nats_subjects.encode_token(device_id)}.>"
    return {"pub": {"allow": [own]}, "sub": {"allow": [own]}}


def mqtt_topic(device_id: str, signal: str) -> str:
    """The MQTT topic a device publishes one signal's readings on (NATS: streamql.<device>.<signal>)."""
    return f"{MQTT_PREFIX}/{nats_subjects.encode_token(device_id)}/{signal}"


def node_connect_options(security: NatsSecurity) -> dict[str, Any]:
    """nats.connect keywords of a federation node (bypasses the callout; may do everything)."""
    return {"user": security.node_user, "password": security.node_password}


def system_connect_options(security: NatsSecurity) -> dict[str, Any]:
    return {"user": security.sys_user, "password": security.sys_password}


class NatsAuthService:
    """Answers nats-server's authorization requests from the registry (module docstring)."""

    def __init__(self, registry: Registry, security: NatsSecurity, *, sessions: Sessions | None = None) -> None:
        self.registry = registry
        self.security = security
        self.sessions = sessions
        self._issuer = nats_jwt.keypair(security.issuer_seed)
        self._nc = None
        self._sys = None
        self._subs: list = []
        self._handles: dict[tuple[str, int], int | None] = {}   # (server id, cid) → Sessions handle
        self._devices: dict[tuple[str, int], str] = {}          # (server id, cid) → device id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener = _DeviceRemovals(self)
        self._node_tag = nats_jwt.new_seed("user")[-12:]         # tells this node's own broadcasts apart
        self._jobs: set[asyncio.Task] = set()
        self.granted = 0
        self.refused = 0
        self.expired = 0     # requests dropped past their expiry (the server had refused them already)
        self._pending: collections.deque = collections.deque()
        self._ready = asyncio.Event()
        self._workers: list[asyncio.Task] = []

    # --- deciding ------------------------------------------------------------------------------
    @staticmethod
    def _token(request: dict[str, Any]) -> str | None:
        claims = request.get("nats") or {}
        options = claims.get("connect_opts") or {}
        mqtt = (claims.get("client_info") or {}).get("type") == "mqtt"
        token = options.get("pass") if mqtt else (options.get("auth_token") or options.get("pass"))
        return token if isinstance(token, str) else None

    def decide(self, request: dict[str, Any], found: dict | None = None) -> Grant:
        """The grant for one authorization request's claims; Unauthorized when refused. `found`:
        a batch lookup (hash → (token record, stored hash, device registered)) to use instead of
        asking the registry for this one token."""
        claims = request.get("nats") or {}
        mqtt = (claims.get("client_info") or {}).get("type") == "mqtt"
        token = self._token(request)
        if found is None:
            principal: Principal = authenticate(self.registry, token)
            registered = None
        else:
            digest = token_digest(token)
            row = found.get(digest)
            principal = principal_of(row[:2] if row else None, digest)
            registered = row[2]
        if principal.role is not Role.DEVICE or principal.device_id is None:
            raise Unauthorized("only device tokens connect to NATS (client tokens are for the HTTP API)")
        if registered is None:
            registered = self.registry.get_device(principal.device_id) is not None
        if not registered:
            raise Unauthorized(f"device {principal.device_id!r} is no longer registered")
        if mqtt:
            permissions = mqtt_permissions(principal.device_id)
        else:
            gateway = principal.device_id in self.security.mqtt_gateways
            permissions = edge_permissions(principal.device_id, gateway=gateway)
        return Grant(user_name(principal.token_id, principal.device_id), principal.token_id,
                     principal.device_id, permissions)

    def answer(self, request_jwt: str) -> tuple[str, Grant | None, dict]:
        """The signed authorization response for a request JWT, the grant (None when refused) and
        the request's claims. A request not signed by a server gets no answer (JwtError)."""
        return self._respond(nats_jwt.decode(request_jwt, issuer_prefix="N"))

    def answer_many(self, request_jwts: list[str]) -> list:
        """`answer` for a batch, its tokens looked up in one registry round trip where the registry
        can (`tokens_by_hashes`); each item is answer's tuple or the JwtError of that request."""
        requests: list = []
        for text in request_jwts:
            try:
                requests.append(nats_jwt.decode(text, issuer_prefix="N"))
            except nats_jwt.JwtError as error:
                requests.append(error)
        found = None
        if hasattr(self.registry, "tokens_by_hashes"):
            digests = set()
            for request in requests:
                with contextlib.suppress(Unauthorized):
                    if isinstance(request, dict):
                        digests.add(token_digest(self._token(request)))
            found = self.registry.tokens_by_hashes(sorted(digests))
        results = []
        for request in requests:
            if isinstance(request, nats_jwt.JwtError):
                results.append(request)
                continue
            try:
                results.append(self._respond(request, found))
            except nats_jwt.JwtError as error:
                results.append(error)
        return results

    def _respond(self, request: dict, found: dict | None = None) -> tuple[str, Grant | None, dict]:
        claims = request.get("nats") or {}
        user_nkey = claims.get("user_nkey")
        server_id = (claims.get("server_id") or {}).get("id")
        if not isinstance(user_nkey, str) or not isinstance(server_id, str):
            raise nats_jwt.JwtError("an authorization request names its user nkey and server")
        response: dict[str, Any] = {"sub": user_nkey, "aud": server_id,
                                    "nats": {"type": "authorization_response", "version": 2}}
        grant = None
        try:
            grant = self.decide(request, found)
        except Unauthorized as refusal:
            response["nats"]["error"] = str(refusal)
        else:
            user = {"sub": user_nkey, "aud": ACCOUNT, "name": grant.name,
                    # no subs/payload limits: outside operator mode nats-server ignores them for
                    # callout users (nats_config.EdgeQuotas says what bounds a device instead)
                    "nats": {**grant.permissions, "type": "user", "version": 2}}
            response["nats"]["jwt"] = nats_jwt.encode(user, self._issuer)
        return nats_jwt.encode(response, self._issuer), grant, request

    # --- serving -------------------------------------------------------------------------------
    async def connect(self, servers: list[str], **options: Any) -> None:
        """Open this service's own node and system connections (failing over between `servers`
        for as long as the service runs) and start answering."""
        import nats

        common = {"allow_reconnect": True, "max_reconnect_attempts": -1, "reconnect_time_wait": 0.5, **options}
        nc = await nats.connect(servers, name="streamql-federation auth", **node_connect_options(self.security),
                                **common)
        try:
            sys_nc = await nats.connect(servers, name="streamql-federation revocations",
                                        **system_connect_options(self.security), **common)
        except Exception:
            await nc.close()
            raise
        self._owned = (nc, sys_nc)
        await self.start(nc, sys_nc)

    async def close(self) -> None:
        await self.stop()
        for nc in getattr(self, "_owned", ()):
            with contextlib.suppress(Exception):
                await nc.close()
        self._owned = ()

    async def start(self, nc, sys_nc=None) -> None:
        """Answer authorization requests on `nc` (a node connection); with `sys_nc` (a system
        account connection) also track disconnections and kick revoked connections."""
        self._nc, self._sys = nc, sys_nc
        self._loop = asyncio.get_running_loop()
        if sys_nc is not None and hasattr(self.registry, "add_listener"):
            self.registry.add_listener(self._listener)   # a deleted device's connections go too
        self._workers = [asyncio.create_task(self._serve(), name=f"nats-auth-{i}") for i in range(WORKERS)]
        # a deep pending limit: a connect storm queues here (the workers drop what expires)
        self._subs.append(await nc.subscribe(AUTH_SUBJECT, queue=AUTH_QUEUE, cb=self._on_request,
                                             pending_msgs_limit=1 << 20, pending_bytes_limit=1 << 30))
        self._subs.append(await nc.subscribe(REVOKED_SUBJECT, cb=self._on_revoked))
        if self.sessions is not None:
            self.sessions.revocation_listeners.append(self._announce)
        if sys_nc is not None:
            self._subs.append(await sys_nc.subscribe(f"$SYS.ACCOUNT.{ACCOUNT}.DISCONNECT", cb=self._on_disconnect))
            await sys_nc.flush()
        await nc.flush()

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
        self._workers.clear()
        self._pending.clear()
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection may be gone already
                pass
        self._subs.clear()
        with contextlib.suppress(ValueError, AttributeError):
            self.registry.remove_listener(self._listener)
        if self.sessions is not None:
            with contextlib.suppress(ValueError):
                self.sessions.revocation_listeners.remove(self._announce)
            for handle in self._handles.values():
                self.sessions.close(handle)
        self._handles.clear()
        self._devices.clear()

    async def _on_request(self, msg) -> None:
        """The subscription's callback only queues (the workers answer in batches): a connect storm
        must not wait behind one request at a time. A request past its expiry is dropped unread —
        the server has refused that connection already, answering it only delays the live ones."""
        if self._expired(msg):
            return
        self._pending.append(msg)
        self._ready.set()

    def _expired(self, msg) -> bool:
        expires = nats_jwt.expires_at(msg.data.decode("utf-8", "replace"))
        if expires is not None and expires <= time.time():
            self.expired += 1
            if self.expired in (1, 10, 100) or self.expired % 1000 == 0:
                log.warning("dropped %d expired authorization requests so far (the callout falls behind "
                            "a connect storm)", self.expired)
            return True
        return False

    async def _serve(self) -> None:
        """One worker: takes up to BATCH queued requests (the newest first under a backlog: the
        oldest are the likeliest to expire before their answer arrives), answers them off the event
        loop where the registry allows (PostgreSQL: one query per batch from a worker thread)."""
        threaded = hasattr(self.registry, "tokens_by_hashes")
        while True:
            while not self._pending:
                self._ready.clear()
                await self._ready.wait()
            batch = []
            while self._pending and len(batch) < BATCH:
                msg = self._pending.pop() if len(self._pending) > BATCH else self._pending.popleft()
                if not self._expired(msg):
                    batch.append(msg)
            if not batch:
                continue
            texts = [msg.data.decode("utf-8", "replace") for msg in batch]
            try:
                results = await (asyncio.to_thread(self.answer_many, texts) if threaded
                                 else asyncio.sleep(0, self.answer_many(texts)))
            except Exception:  # noqa: BLE001 - the registry failed: these connections are refused by timeout
                log.exception("answering %d authorization requests failed", len(batch))
                continue
            for msg, result in zip(batch, results):
                await self._send(msg, result)

    async def _send(self, msg, result) -> None:
        if isinstance(result, nats_jwt.JwtError):
            if "expired" in str(result):
                self.expired += 1
            else:
                log.warning("ignoring an authorization request that is not a server's: %s", result)
            return
        response, grant, request = result
        if grant is None:
            self.refused += 1
            log.info("NATS connection refused: %s", json.loads(nats_jwt._unb64(response.split(".")[1]))
                     ["nats"].get("error"))
        else:
            self.granted += 1
            self._remember(grant, request)
        with contextlib.suppress(Exception):   # our connection dropped: the server times the client out
            await msg.respond(response.encode())

    def _remember(self, grant: Grant, request: dict) -> None:
        claims = request["nats"]
        server_id = claims["server_id"]["id"]
        cid = (claims.get("client_info") or {}).get("id")
        if self._sys is None or not isinstance(cid, int):
            return
        self._devices[(server_id, cid)] = grant.device_id
        if self.sessions is None:
            return

        async def close(reason: str) -> None:
            await self.kick(server_id, cid)

        key = (server_id, cid)
        self.sessions.close(self._handles.pop(key, None))
        self._handles[key] = self.sessions.open(grant.token_id, close, label=f"nats {grant.name}")

    async def _on_disconnect(self, msg) -> None:
        try:
            event = json.loads(msg.data)
            key = (event["server"]["id"], event["client"]["id"])
        except (ValueError, KeyError, TypeError):
            return
        handle = self._handles.pop(key, None)
        self._devices.pop(key, None)
        if self.sessions is not None:
            self.sessions.close(handle)

    # --- revoking ------------------------------------------------------------------------------
    def _announce(self, token_id: int, reason: str) -> None:
        """A revocation on this node: tell the others (Sessions calls this, so it cannot wait)."""
        if self._nc is None or self._nc.is_closed:
            return
        payload = json.dumps({"token_id": token_id, "reason": reason, "node": self._node_tag}).encode()
        job = asyncio.ensure_future(self._nc.publish(REVOKED_SUBJECT, payload))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _on_revoked(self, msg) -> None:
        try:
            notice = json.loads(msg.data)
            if isinstance(notice.get("device_id"), str):
                if notice.get("node") != self._node_tag:
                    self.device_removed(notice["device_id"], announce=False)
                return
            token_id, reason, node = int(notice["token_id"]), str(notice["reason"]), notice.get("node")
        except (ValueError, KeyError, TypeError):
            return
        if node != self._node_tag and self.sessions is not None:
            await self.sessions.revoke(token_id, reason, announce=False)

    async def kick(self, server_id: str, cid: int) -> bool:
        """Disconnect one client connection of one server (system account)."""
        if self._sys is None:
            raise RuntimeError("kicking connections needs the system account connection")
        try:
            reply = await self._sys.request(f"$SYS.REQ.SERVER.{server_id}.KICK",
                                            json.dumps({"cid": cid}).encode(), timeout=2.0)
        except Exception as error:  # a server that went away has dropped the connection anyway
            log.warning("kicking connection %s on %s failed: %r", cid, server_id, error)
            return False
        answer = json.loads(reply.data or b"{}")
        return "error" not in answer

    def device_removed(self, device_id: str, *, announce: bool = True) -> None:
        """The registry forgot a device (its tokens with it): kick what this node authorized, and
        tell the other nodes to kick theirs."""
        if self._loop is None or self._loop.is_closed():
            return
        keys = [key for key, device in list(self._devices.items()) if device == device_id]

        def schedule() -> None:
            if announce and self._nc is not None and not self._nc.is_closed:
                payload = json.dumps({"device_id": device_id, "node": self._node_tag}).encode()
                job = asyncio.ensure_future(self._nc.publish(REVOKED_SUBJECT, payload))
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)
            for server_id, cid in keys:
                job = asyncio.ensure_future(self.kick(server_id, cid))
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)

        self._loop.call_soon_threadsafe(schedule)

    async def kick_token(self, token_id: int) -> int:
        """Disconnect a token's connections on every server of the cluster; how many."""
        record = self.registry.get_token(token_id)
        if record is None or record.device_id is None or self._sys is None:
            return 0
        inbox = self._sys.new_inbox()
        sub = await self._sys.subscribe(inbox)
        kicked = 0
        try:
            await self._sys.publish("$SYS.REQ.SERVER.PING.CONNZ",
                                    json.dumps({"user": user_name(token_id, record.device_id), "limit": 1024}).encode(),
                                    reply=inbox)
            while True:
                try:
                    msg = await sub.next_msg(timeout=CONNZ_WINDOW_S)
                except asyncio.TimeoutError:
                    break
                answer = json.loads(msg.data)
                server_id = answer["server"]["id"]
                for conn in (answer.get("data") or {}).get("connections") or []:
                    kicked += await self.kick(server_id, conn["cid"])
        finally:
            await sub.unsubscribe()
        return kicked


class _DeviceRemovals:
    """The registry listener of a NatsAuthService: only removals matter to it."""

    def __init__(self, service: NatsAuthService) -> None:
        self.service = service

    def reset(self, devices) -> None:
        pass

    def device_changed(self, device) -> None:
        pass

    def online_changed(self, device_ids, online) -> None:
        pass

    def device_removed(self, device_id: str) -> None:
        self.service.device_removed(device_id)


async def auth_service_ctx(app) -> AsyncIterator[None]:
    """An aiohttp cleanup context: with edges on NATS (`--nats`) and DIR/nats-security.json present,
    this node answers the auth callout and kicks revoked connections while it runs. Register it
    before the hub's (edges cannot connect while no node answers)."""
    from federation.keys import CONFIG, REGISTRY, SESSIONS
    from federation.nats_config import SECURITY_FILE

    config = app[CONFIG]
    servers = list(getattr(config, "nats", None) or [])
    if not servers or not (config.data_dir / SECURITY_FILE).exists():
        yield
        return
    service = NatsAuthService(app[REGISTRY], NatsSecurity.load_or_create(config.data_dir), sessions=app[SESSIONS])
    await service.connect(servers)
    app[AUTH_SERVICE] = service
    try:
        yield
    finally:
        await service.close()
