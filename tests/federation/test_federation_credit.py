"""How much credit the federation grants a fragment (federation/hub_types.Grants): a fixed window
for one-shot queries, and for standing streams a window that follows what the reader takes — so an
edge streaming to a client that stopped reading pauses after about `window_s` of its rows."""
from __future__ import annotations

import asyncio

import pytest

from federation.hub_types import LEAST_FOLLOWED_CREDIT, Grants
from federation.keys import HUB
from federation.testing import until

pytestmark = pytest.mark.timeout(60)


def test_a_fixed_window_grants_what_was_taken_at_each_half():
    grants = Grants(100)
    assert [grants.took(n) for n in (20, 20, 10, 60, 50)] == [0, 0, 50, 60, 50]


class Reader:
    """A consumer of a source of `rate` rows a second, as the hub sees it: the rows the edge sends
    are at most what was granted; the reader takes them as they come."""

    def __init__(self, credit: int, rate: float, window_s: float, most: int = 10_000):
        self.now = 0.0
        self.grants = Grants(credit, window_s=window_s, most=most, clock=lambda: self.now)
        self.rate = rate
        self.granted = credit
        self.taken = 0

    def read_for(self, seconds: float, step: float = 0.01) -> None:
        produced = self.taken
        for _ in range(round(seconds / step)):
            self.now += step
            produced += self.rate * step
            n = min(int(produced) - self.taken, self.granted - self.taken)   # sent, within credit
            if n > 0:
                self.taken += n
                self.granted += self.grants.took(n)

    @property
    def outstanding(self) -> int:
        return self.granted - self.taken


def test_the_window_of_a_slow_stream_shrinks_to_what_its_reader_takes():
    reader = Reader(credit=512, rate=10, window_s=2.0)      # 512 rows were 51 s of a 10 Hz signal
    reader.read_for(120)
    assert reader.taken >= 10 * 120 - 20                     # the reader was never held back
    assert reader.outstanding <= max(LEAST_FOLLOWED_CREDIT, 2 * 10 * 2.0)


def test_a_reader_that_keeps_up_with_a_fast_source_opens_the_window():
    reader = Reader(credit=64, rate=5000, window_s=2.0)
    reader.read_for(10)
    assert reader.taken >= 5000 * 8                           # after a short ramp, at the source's rate
    assert 5000 <= reader.grants.window <= 10_000             # about 2 s of it, never past `most`


def test_a_reader_that_stops_stops_the_grants_and_starts_them_again():
    reader = Reader(credit=64, rate=100, window_s=2.0)
    reader.read_for(20)
    granted = reader.granted
    assert reader.outstanding <= 2 * 100 * 2.0                # about 2 s of rows, not a fixed count
    reader.rate = 0                                           # nothing more taken: nothing granted
    reader.read_for(5)
    assert reader.granted == granted
    reader.rate = 100
    reader.read_for(20)
    assert reader.granted > granted and reader.taken >= 100 * 35


async def test_an_edge_streaming_to_a_reader_that_stops_pauses_after_the_window(fleet):
    """Against a fake edge that honours its credit exactly: a 50-rows-a-second stream followed with
    a 0.2 s window. Once the reader stops, the edge sends at most what the window holds — not the
    32 to 64 rows a fixed window of 64 leaves it after each grant."""
    async def source(source, frame):
        while True:
            await asyncio.sleep(0.02)
            yield [(1.0,)]

    edge = fleet.edge("e1", answer=lambda text, frame: source(text, frame))
    await edge.connect()
    stream = fleet.app[HUB].fragment("e1", "select stream of …;", credit=64, kind="stream",
                                     follow_s=0.2, most_credit=10_000)
    taken = 0
    async for batch in stream:
        taken += batch.n
        if taken >= 150:          # 3 s of reading: the window has followed the reader down
            break
    qid = next(iter(edge.rows_sent))
    sent_at_stop = edge.rows_sent[qid]
    await asyncio.sleep(2.0)      # the reader holds the stream open and reads nothing (100 rows' time)
    assert edge.rows_sent[qid] - taken <= LEAST_FOLLOWED_CREDIT + 8, (sent_at_stop, edge.rows_sent[qid], taken)
    await stream.aclose()
    await until(lambda: qid in edge.ended)
    assert edge.ended[qid]["outcome"] == "cancelled"
