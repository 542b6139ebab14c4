"""A fragment's worker hands a rows frame to the loop and goes on: its own end follows its rows
without waiting for them to be written (on a busy device a thread waits seconds to be scheduled
again), while a cancel still drops what was not yet written."""
import asyncio
import threading

from edge_engine.fragments import FragmentSet
from streamql import wire
from streamql.engine import Engine


def _fragments(send_bytes):
    frames: list[wire.Frame] = []

    async def send_frame(frame):
        frames.append(frame)

    async def write(data):
        await send_bytes(data)
        frames.append(wire.decode(data))

    engine = Engine()
    return FragmentSet(asyncio.get_running_loop(), send_frame=send_frame, send_bytes=write,
                       engine=lambda: engine), frames


async def _until(condition, timeout=20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


async def test_a_one_shot_fragment_is_decided_while_its_row_is_still_being_written():
    socket_free = asyncio.Event()

    async def slow_socket(data):
        await socket_free.wait()

    fragments, frames = _fragments(slow_socket)
    fragment = fragments.start({"qid": "q1", "source": "select 41 + 1;", "credit": 100})
    # the worker's "ok" reaches the loop before the socket took the row: it did not wait for it
    await _until(lambda: fragment.outcome == "ok")
    assert frames == []
    socket_free.set()
    await _until(lambda: any(f.t == "end" for f in frames))
    assert [f.t for f in frames] == ["rows", "end"]                # the row first, then the end
    rows, end = frames
    assert list(rows["cols"][0]) == [42] and end["outcome"] == "ok" and end["rows"] == 1


async def test_a_row_limit_reached_by_the_worker_still_sends_exactly_that_many_rows():
    socket_free = asyncio.Event()

    async def slow_socket(data):
        await socket_free.wait()

    fragments, frames = _fragments(slow_socket)
    fragment = fragments.start({"qid": "q2", "source": "select stream of x from Integer x where x in siota(1, 100000);",
                                "credit": 10000, "batch_rows": 1000, "limits": {"rows": 250}})
    await _until(lambda: fragment.outcome == "limit")   # with its 250 rows still unwritten
    socket_free.set()
    await _until(lambda: any(f.t == "end" for f in frames))
    assert [f.t for f in frames][-1] == "end" and frames[-1]["rows"] == 250
    sent = [x for f in frames if f.t == "rows" for x in f["cols"][0]]
    assert sent == list(range(1, 251))


async def test_a_cancel_drops_the_rows_not_yet_written_and_ends_cancelled():
    socket_free = asyncio.Event()
    first_write = threading.Event()

    async def slow_socket(data):
        first_write.set()
        await socket_free.wait()

    fragments, frames = _fragments(slow_socket)
    fragment = fragments.start({"qid": "q3", "source": "select stream of x from Integer x where x in siota(1, 100000);",
                                "credit": 100000, "batch_rows": 10})
    await _until(first_write.is_set)
    fragment.cancel()
    socket_free.set()
    await _until(lambda: any(f.t == "end" for f in frames))
    await asyncio.sleep(0.3)
    assert frames[-1].t == "end" and frames[-1]["outcome"] == "cancelled"
    # at most the frame the socket was already writing went out, and the end counts what went
    written = sum(f["n"] for f in frames if f.t == "rows")
    assert written <= 10 and frames[-1]["rows"] == written
