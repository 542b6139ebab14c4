"""The soak benchmark's clients: one process per group, asyncio and aiohttp, each client its own token.

    python bench/soak_clients.py CONFIG.json        # writes CONFIG["result"] (JSON) when it ends

Groups (CONFIG["group"]):
- `well`: well-behaved clients, one request every think/2 … 3·think/2 s: `select 1;` 40 %, a
  grouped fleet aggregate 10 %, an EU battery fleet query 15 %, `GET /v1/edges` 20 %, an EU
  `engine_speed` stream read 3 s then closed over POST 8 % or over /v1/query/ws by `cancel` 7 %.
  Errors: HTTP ≥ 400 other than 429/503, a broken connection, a hang, a last line `error`, a body
  cut without its last line, a device failed or timed out (offline is not an error), a stream with
  no row in 3 s, a WebSocket cancel not answered `cancelled`. A stream's 3 s count from the
  federation's acknowledgement that it runs (POST: the response head; WebSocket: `columns`, sent at
  the same point); the wait for it is reported as its own latency, "stream_… admission". 429/503
  are retried after Retry-After and counted apart.
- `bad`: abandoning clients (one stream every 5–15 s, left in one of four ways) and hostile clients
  (one act every 1.5–4.5 s, ACTS below); with `isolate`, each hostile act alone, with two probes.
"""
from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "federation"))

EU_STREAM = ("select stream of id(e), x from Edge e, Real x where region(e) = 'EU' "
             "and x in signal_stream('engine_speed')@e;")
WELL = [  # (kind, share)
    ("select1", 40), ("aggregate", 10), ("battery", 15), ("edges", 20), ("stream_post", 8), ("stream_ws", 7)]
QUERIES = {
    "select1": "select 1;",
    "aggregate": "select region(e), count(e), avg(signal_value('battery')@e), max(signal_value('engine_speed')@e) "
                 "from Edge e group by region(e);",
    "battery": "select id(e), signal_value('battery')@e from Edge e where region(e) = 'EU';",
}
ABANDONED = [
    "select stream of x from Object x where x in heartbeat(60);",
    "select stream of id(e), x from Edge e, Real x where x in signal_stream('engine_speed')@e;",
    "select stream of id(e), x from Edge e, Real x where x in signal_stream('vibration')@e;",
    "select stream of x from Object x where x in subscribe('x');",
]
ABANDON_WAYS = ("before_head", "after_head", "unread", "dropped_ws")
ACTS = ("deep_json", "near_string", "near_in_list", "near_sum", "over_64k", "over_1mb", "zeros", "iota_edge",
        "passwd", "flood", "slowloris", "zip_bomb")
REQUEST_HANG_S = 30.0
STREAM_HANG_S = 45.0
MAX_STATEMENT = 64 * 1024


PASSWD_LINES = [line.split(":", 1)[0] + ":" + line.split(":", 2)[1] + ":" for line in
                Path("/etc/passwd").read_text(errors="replace").splitlines() if line.count(":") >= 2]


def leaked_lines(body: bytes) -> int:
    """How many of /etc/passwd's entries (`name:x:`, `name:*:`) the response body holds."""
    text = body.decode("utf-8", "replace")
    return sum(1 for entry in PASSWD_LINES if entry in text)


def near_limit(kind: str) -> str:
    room = MAX_STATEMENT - 64
    if kind == "near_string":
        return "select '" + "x" * (room - 10) + "';"
    if kind == "near_in_list":
        head = "select x from Integer x where x in ("
        items, size, i = [], len(head) + 2, 0
        while size + len(str(i)) + 1 < room:
            items.append(str(i))
            size += len(str(i)) + 1
            i += 1
        return head + ",".join(items) + ");"
    return "select " + "+".join(["1"] * ((room - 8) // 2)) + ";"


class Stats:
    def __init__(self):
        self.counts: Counter = Counter()          # "kind" → requests done
        self.errors: Counter = Counter()          # "kind: reason" → errors
        self.samples: list = []                   # the first errors in detail
        self.retried: Counter = Counter()         # "kind: 429" → retries
        self.statuses: Counter = Counter()        # "kind: status" (bad clients)
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.isolated: list[dict] = []

    def error(self, kind: str, reason: str, detail: str = "") -> None:
        self.errors[f"{kind}: {reason}"] += 1
        # the first 60, and the first 5 of every kind of error (a rare one is not crowded out)
        if len(self.samples) < 60 or self.errors[f"{kind}: {reason}"] <= 5:
            self.samples.append({"t": round(time.time(), 1), "kind": kind, "reason": reason, "detail": detail[:300]})

    def to_dict(self) -> dict:
        return {"counts": dict(self.counts), "errors": dict(self.errors), "samples": self.samples,
                "retried": dict(self.retried), "statuses": dict(self.statuses),
                "latency": {k: [round(x, 4) for x in v] for k, v in self.latency.items()},
                "isolated": self.isolated}


class Failed(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def check_final(lines: list[bytes]) -> None:
    """The body of a one-shot statement: its last line the status, no error, no device failed."""
    if not lines:
        raise Failed("body cut", "empty body")
    try:
        last = json.loads(lines[-1])
    except ValueError:
        raise Failed("body cut", lines[-1][:200].decode(errors="replace")) from None
    if not isinstance(last, dict) or "status" not in last:
        raise Failed("body cut", str(last)[:200])
    if "error" in last:
        raise Failed("error line", json.dumps(last["error"])[:300])
    counts = (last.get("status") or {}).get("counts") or {}
    for outcome in ("failed", "timed out"):
        if counts.get(outcome):
            devices = {d: o for d, o in (last["status"].get("devices") or {}).items() if o.get("outcome") == outcome}
            raise Failed(f"device {outcome}", json.dumps(devices)[:300])


class Client:
    """What every client shares: the URL, its session, the statistics, the end time."""

    def __init__(self, config: dict, session: aiohttp.ClientSession, stats: Stats):
        self.config, self.url, self.session, self.stats = config, config["url"], session, stats
        self.bombs: list = []
        self.heavy = asyncio.Semaphore(config.get("heavy", 2))
        self.end = time.monotonic() + config["duration"]

    def headers(self, token: str) -> dict:
        return {"Authorization": f"Bearer {token}"}

    async def retrying(self, kind: str, attempt):
        """attempt() → a response status; 429/503 retried after Retry-After (at most 4 times)."""
        for _ in range(5):
            status, retry_after = await attempt()
            if status not in (429, 503):
                return status
            self.stats.retried[f"{kind}: {status}"] += 1
            await asyncio.sleep(min(10.0, max(0.2, retry_after)))
        self.stats.retried[f"{kind}: gave up"] += 1
        return None

    # ------------------------------------------------------------------------------ well-behaved
    async def post_query(self, kind: str, token: str, text: str) -> None:
        async def attempt():
            async with self.session.post(self.url + "/v1/query", json={"query": text},
                                         headers=self.headers(token)) as resp:
                if resp.status in (429, 503):
                    await resp.read()
                    return resp.status, float(resp.headers.get("Retry-After", "1"))
                body = await resp.read()
                if resp.status >= 400:
                    raise Failed(f"HTTP {resp.status}", body[:300].decode(errors="replace"))
                check_final(body.splitlines())
                return resp.status, 0.0
        await self.retrying(kind, attempt)

    async def get_edges(self, kind: str, token: str) -> None:
        async def attempt():
            async with self.session.get(self.url + "/v1/edges?limit=1000", headers=self.headers(token)) as resp:
                body = await resp.read()
                if resp.status in (429, 503):
                    return resp.status, float(resp.headers.get("Retry-After", "1"))
                if resp.status >= 400:
                    raise Failed(f"HTTP {resp.status}", body[:300].decode(errors="replace"))
                if "edges" not in json.loads(body):
                    raise Failed("body cut", body[:200].decode(errors="replace"))
                return resp.status, 0.0
        await self.retrying(kind, attempt)

    async def stream_post(self, kind: str, token: str) -> None:
        async def attempt():
            sent = time.monotonic()
            resp = await self.session.post(self.url + "/v1/query", json={"query": EU_STREAM},
                                           headers=self.headers(token))
            try:
                if resp.status in (429, 503):
                    await resp.read()
                    return resp.status, float(resp.headers.get("Retry-After", "1"))
                if resp.status >= 400:
                    raise Failed(f"HTTP {resp.status}", (await resp.read())[:300].decode(errors="replace"))
                # the 3 s count from the acknowledgement (the response head, as the WebSocket's
                # `columns`); the wait for it is reported apart, as admission
                rows, started, changes = 0, time.monotonic(), Counter()
                self.stats.latency[kind + " admission"].append(started - sent)
                while time.monotonic() - started < 3.0:
                    try:
                        line = await asyncio.wait_for(resp.content.readline(), max(0.01, 3.0 - (time.monotonic() - started)))
                    except asyncio.TimeoutError:
                        break
                    if not line:
                        raise Failed("body cut", "the stream ended")
                    value = json.loads(line)
                    if isinstance(value, dict) and "error" in value:
                        raise Failed("error line", json.dumps(value["error"])[:300])
                    if isinstance(value, list):
                        if not rows:
                            self.stats.latency[kind + " first row"].append(time.monotonic() - started)
                        rows += 1
                    elif isinstance(value, dict) and "status_change" in value:
                        change = value["status_change"] or {}
                        changes[f"{change.get('outcome')}: {str(change.get('reason'))[:60]}"] += 1
                if rows == 0:   # what the devices said, to tell refusals from slow devices
                    raise Failed("no row in 3 s", json.dumps(dict(changes.most_common(4)))[:300])
                return resp.status, 0.0
            finally:
                resp.close()
        await self.retrying(kind, attempt)

    async def stream_ws(self, kind: str, token: str) -> None:
        async with self.session.ws_connect(self.url + "/v1/query/ws", headers=self.headers(token)) as ws:
            await ws.send_json({"type": "query", "id": "s", "query": EU_STREAM})
            # the 3 s count from the acknowledgement that the statement runs, `columns` (sent when
            # the POST route sends its response head: at the first row or after 1 s); until then
            # the wait is admission, reported apart and bounded by the hang time only
            sent, rows, started, cancelled_at = time.monotonic(), 0, None, None
            changes: Counter = Counter()      # the devices' status changes: outcome and reason
            while True:
                if started is not None and cancelled_at is None and time.monotonic() - started >= 3.0:
                    if rows == 0:   # what the devices said, to tell refusals from slow devices
                        raise Failed("no row in 3 s", json.dumps(dict(changes.most_common(4)))[:300])
                    await ws.send_json({"type": "cancel", "id": "s"})
                    cancelled_at = time.monotonic()
                wait = STREAM_HANG_S if started is None else (3.0 - (time.monotonic() - started)) \
                    if cancelled_at is None else 10.0 - (time.monotonic() - cancelled_at)
                if wait <= 0 and cancelled_at is not None:
                    raise Failed("cancel unanswered", f"{rows} rows")
                try:
                    msg = await ws.receive(timeout=max(0.01, wait))
                except asyncio.TimeoutError:
                    continue
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise Failed("broken connection", f"WebSocket {msg.type.name} {msg.data} {msg.extra}")
                message = json.loads(msg.data)
                if message["type"] == "columns" and started is None:
                    started = time.monotonic()
                    self.stats.latency[kind + " admission"].append(started - sent)
                elif message["type"] == "rows":
                    if started is None:     # (not sent so by the federation) the rows acknowledge it
                        started = time.monotonic()
                    if not rows:
                        self.stats.latency[kind + " first row"].append(time.monotonic() - started)
                    rows += len(message["rows"])
                elif message["type"] == "status":
                    change = message.get("change") or {}
                    changes[f"{change.get('outcome')}: {str(change.get('reason'))[:60]}"] += 1
                elif message["type"] == "cancelled":
                    if cancelled_at is None:
                        raise Failed("cancelled unasked")
                    return
                elif message["type"] == "error":
                    if message["error"].get("kind") in ("TooManyRequests", "Busy"):
                        self.stats.retried[f"{kind}: {message['error']['kind']}"] += 1
                        return
                    raise Failed("error line", json.dumps(message["error"])[:300])
                elif message["type"] == "end":
                    raise Failed("body cut", "a stream ended by itself")

    async def one_well(self, kind: str, token: str) -> None:
        started = time.monotonic()
        hang = STREAM_HANG_S if kind.startswith("stream") else REQUEST_HANG_S
        try:
            async with asyncio.timeout(hang):
                if kind in QUERIES:
                    await self.post_query(kind, token, QUERIES[kind])
                elif kind == "edges":
                    await self.get_edges(kind, token)
                elif kind == "stream_post":
                    await self.stream_post(kind, token)
                else:
                    await self.stream_ws(kind, token)
        except Failed as exc:
            self.stats.error(kind, exc.reason, exc.detail)
        except TimeoutError:
            self.stats.error(kind, "hang", f"> {hang:.0f} s")
        except (aiohttp.ClientError, ConnectionError) as exc:
            self.stats.error(kind, "broken connection", repr(exc))
        except ValueError as exc:
            self.stats.error(kind, "body cut", repr(exc))
        else:
            self.stats.latency[kind].append(time.monotonic() - started)
        self.stats.counts[kind] += 1

    async def well_behaved(self, token: str, rng: random.Random) -> None:
        think = self.config["think"]
        kinds, weights = zip(*WELL)
        await asyncio.sleep(rng.uniform(0, think))
        while time.monotonic() < self.end:
            await self.one_well(rng.choices(kinds, weights)[0], token)
            await asyncio.sleep(rng.uniform(think / 2, think * 1.5))

    # ------------------------------------------------------------------------------ abandoning
    async def abandon(self, token: str, rng: random.Random, stop: asyncio.Event) -> None:
        await asyncio.sleep(rng.uniform(0, 5))
        while not stop.is_set():
            text, way = rng.choice(ABANDONED), rng.choice(ABANDON_WAYS)
            try:
                async with asyncio.timeout(30):
                    status = await self.abandon_one(token, text, way, rng)
                self.stats.statuses[f"abandon {way}: {status}"] += 1
            except (TimeoutError, aiohttp.ClientError, ConnectionError, OSError) as exc:
                self.stats.statuses[f"abandon {way}: {type(exc).__name__}"] += 1
            self.stats.counts[f"abandon {way}"] += 1
            await _sleep_or_stop(stop, rng.uniform(5, 15))

    async def abandon_one(self, token: str, text: str, way: str, rng: random.Random):
        if way == "before_head":
            body = json.dumps({"query": text}).encode()
            reader, writer = await asyncio.open_connection("127.0.0.1", self.config["port"])
            writer.write(b"POST /v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode() +
                         b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
                         b"\r\n\r\n" + body)
            await writer.drain()
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            writer.transport.abort()
            return "aborted"
        if way == "dropped_ws":
            async with aiohttp.ClientSession() as own:
                ws = await own.ws_connect(self.url + "/v1/query/ws", headers=self.headers(token))
                await ws.send_json({"type": "query", "id": "a", "query": text})
                with _suppress_timeout():
                    await ws.receive(timeout=2)
                # closing the session without a close frame: the TCP connection just drops
            return "dropped"
        resp = await self.session.post(self.url + "/v1/query", json={"query": text}, headers=self.headers(token))
        try:
            if way == "unread":
                await asyncio.sleep(rng.uniform(5, 15))
            return resp.status
        finally:
            resp.close()

    # ------------------------------------------------------------------------------ hostile
    async def hostile(self, tokens: list[str], rng: random.Random, stop: asyncio.Event, acts: list[str]) -> None:
        await asyncio.sleep(rng.uniform(0, 4))
        while not stop.is_set():
            act = rng.choice(acts)
            await self.act(act, tokens[0], rng)
            await _sleep_or_stop(stop, rng.uniform(1.5, 4.5))

    async def act(self, act: str, token: str, rng: random.Random) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(60):
                status = await getattr(self, "act_" + act, None)(token, rng) if hasattr(self, "act_" + act) \
                    else await self.post_text(token, near_limit(act) if act.startswith("near") else "")
        except (TimeoutError, aiohttp.ClientError, ConnectionError, OSError) as exc:
            status = type(exc).__name__
        self.stats.statuses[f"{act}: {status}"] += 1
        self.stats.counts[act] += 1
        self.stats.latency[act].append(time.monotonic() - started)

    async def post_text(self, token: str, text: str, read: bool = True):
        async with self.session.post(self.url + "/v1/query", json={"query": text}, headers=self.headers(token)) as resp:
            if read:
                await resp.read()
            return resp.status

    async def act_deep_json(self, token, rng):
        body = '{"query": "select 1;", "limits": ' + "[" * 100_000 + "]" * 100_000 + "}"
        async with self.session.post(self.url + "/v1/query", data=body, headers={
                **self.headers(token), "Content-Type": "application/json"}) as resp:
            await resp.read()
            return resp.status

    async def act_over_64k(self, token, rng):
        return await self.post_text(token, "select '" + "x" * (MAX_STATEMENT + 1 - 10) + "';")

    async def act_over_1mb(self, token, rng):
        return await self.post_text(token, "select " + "+".join(["1"] * 500_000) + ";")

    async def act_zeros(self, token, rng):
        async with self.heavy:
            return await self.post_text(token, "select zeros(50000000);")

    async def act_iota_edge(self, token, rng):
        return await self.post_text(token, "select count(iota(1, 1000000000000))@e from Edge e;")

    async def act_passwd(self, token, rng):
        """Refused whatever the status: a stream's response head may go out before its error (the
        federation waits FIRST_ROW_WAIT_S for a first row, longer on a busy box), so a 200 must end
        with an error line; any line of the file in the body is a leak (a hard failure of the run)."""
        text = "select x from Object x where x in csv:file_stream('/etc/passwd') limit 2;"
        async with self.session.post(self.url + "/v1/query", json={"query": text}, headers=self.headers(token)) as resp:
            body = await resp.read()
        if leaked_lines(body):
            self.stats.statuses["passwd LEAKED: " + body[:300].decode("utf-8", "replace")] += 1
            return f"{resp.status} LEAKED"
        if resp.status == 200:
            return "200 error line" if b'"error"' in body else "200 without error line"
        return resp.status

    async def act_flood(self, token, rng):
        gate = asyncio.Semaphore(32)
        statuses: Counter = Counter()

        async def one():
            async with gate:
                try:
                    statuses[await self.post_text(token, "select 1;")] += 1
                except (aiohttp.ClientError, ConnectionError) as exc:
                    statuses[type(exc).__name__] += 1
        await asyncio.gather(*(one() for _ in range(250)))
        return ",".join(f"{k}×{v}" for k, v in sorted(statuses.items(), key=str))

    async def act_slowloris(self, token, rng):
        heads = []
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.config["port"])
            writer.write(b"GET /v1/edges HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            heads.append((reader, writer))
        closed = 0
        try:
            async with asyncio.timeout(25):   # the federation's idle timeout is 15 s
                for reader, _ in heads:
                    await reader.read()
                    closed += 1
        except TimeoutError:
            pass
        for _, writer in heads:
            writer.transport.abort()
        return f"closed {closed}/20"

    async def act_zip_bomb(self, token, rng):
        name, data = self.bombs[self.bomb_turn % len(self.bombs)]
        self.bomb_turn += 1
        async with self.session.post(self.url + "/v1/models", data=data,
                                     headers=self.headers(self.config["deploy_token"])) as resp:
            await resp.read()
            return f"{name} {resp.status}"

    def make_bombs(self) -> None:
        from hostile_zips import signed_bomb
        from streamql.models import keygen
        work = Path(self.config["work"])
        mallory, _ = keygen(work / "keys" / "mallory")
        trusted = self.config["private_key"]
        self.bombs = [("unsigned", signed_bomb(None, inflated_mib=1000)),
                      ("foreign", signed_bomb(mallory, inflated_mib=1000)),
                      ("lying", signed_bomb(None, inflated_mib=3000, declared=1000)),
                      ("trusted-lying", signed_bomb(trusted, inflated_mib=1000, declared=1000))]
        self.bomb_turn = 0
        self.heavy = asyncio.Semaphore(self.config["heavy"])

    # ------------------------------------------------------------------------------ isolated acts
    async def isolate(self, acts: list[str], token: str, probe_token: str, rng: random.Random) -> None:
        """Each act alone, while two probes (`select 1;`, the EU battery fleet query) run in a loop:
        their worst latency before and during the act, and the federation's RSS growth."""
        for act in acts:
            baseline = await self.probe_for(probe_token, 3.0)
            rss_before = _rss_mb(self.config["federation_pid"])
            probing = asyncio.ensure_future(self.probe_until(probe_token))
            started = time.monotonic()
            for _ in range(len(self.bombs) if act == "zip_bomb" else 1):   # every kind of bomb
                await self.act(act, token, rng)
            seconds = time.monotonic() - started
            await asyncio.sleep(max(0.0, 2.0 - seconds))    # the probes see at least 2 s of its effect
            probing.cancel()
            await asyncio.gather(probing, return_exceptions=True)
            during = self.probes_seen
            self.stats.isolated.append({
                "act": act, "seconds": round(seconds, 2),
                "status": [k for k in self.stats.statuses if k.startswith(act + ":")],
                "select1_ms_before": baseline["select1"], "battery_ms_before": baseline["battery"],
                "select1_ms_worst": during["select1"], "battery_ms_worst": during["battery"],
                "probe_errors": during["errors"],
                "rss_growth_mb": round(_rss_mb(self.config["federation_pid"]) - rss_before, 1)})
            await asyncio.sleep(1.0)

    async def probe_until(self, token: str) -> None:
        self.probes_seen = {"select1": 0.0, "battery": 0.0, "errors": 0}
        while True:
            for kind in ("select1", "battery"):
                started = time.monotonic()
                before = sum(self.stats.errors.values())
                await self.one_well(kind, token)
                ms = round((time.monotonic() - started) * 1000, 1)
                self.probes_seen[kind] = max(self.probes_seen[kind], ms)
                self.probes_seen["errors"] += sum(self.stats.errors.values()) - before
            await asyncio.sleep(0.1)

    async def probe_for(self, token: str, seconds: float) -> dict:
        probing = asyncio.ensure_future(self.probe_until(token))
        await asyncio.sleep(seconds)
        probing.cancel()
        await asyncio.gather(probing, return_exceptions=True)
        return self.probes_seen


class _suppress_timeout:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind is not None and issubclass(kind, (asyncio.TimeoutError, TimeoutError))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with _suppress_timeout():
        await asyncio.wait_for(stop.wait(), seconds)


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def main(config: dict) -> None:
    stats = Stats()
    rng = random.Random(config.get("seed", 1))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    result = Path(config["result"])
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        client = Client(config, session, stats)
        if config["group"] == "well":
            tasks = [asyncio.ensure_future(client.well_behaved(token, random.Random(rng.random())))
                     for token in config["tokens"]]
            done = asyncio.ensure_future(asyncio.gather(*tasks))
            await asyncio.wait({done, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        else:
            acts = [a for a in ACTS if a not in set(config.get("skip", ()))]
            if "zip_bomb" in acts or "zeros" in acts:
                await asyncio.to_thread(client.make_bombs)
            if config.get("isolate"):
                await client.isolate(acts, config["hostile_tokens"][0], config["probe_token"], rng)
                stop.set()
            tasks = [asyncio.ensure_future(client.abandon(t, random.Random(rng.random()), stop))
                     for t in config["abandon_tokens"]]
            tasks += [asyncio.ensure_future(client.hostile([t], random.Random(rng.random()), stop, acts))
                      for t in config["hostile_tokens"]] if acts else []
            # results so far every few seconds: the bench stops this process while it runs
            while not stop.is_set():
                result.write_text(json.dumps(stats.to_dict()))
                await _sleep_or_stop(stop, 2.0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    result.write_text(json.dumps(stats.to_dict()))


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
