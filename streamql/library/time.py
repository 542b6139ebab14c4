"""Points in time and timestamped values."""
from __future__ import annotations

from ..registry import Library
from ..values import Time, Timeval


def register(lib: Library) -> None:
    d = lambda sig, **kw: lib.define(sig, topic="time", **kw)  # noqa: E731
    d("now() -> Time", scalar=lambda ctx: Time(ctx.clock.now()), needs_context=True, volatile=True,
      doc="The current time (the engine's clock)")
    d("timeval(Number seconds) -> Time", scalar=lambda s: Time(float(s)), doc="The time that many seconds after 1970-01-01 UTC")
    d("seconds(Time t) -> Real", scalar=lambda t: t.seconds, doc="Seconds since 1970-01-01 UTC")
    d("ts(Time t, T v) -> Timeval of T", scalar=lambda t, v: Timeval(t, v), null_propagating=False,
      doc="A timestamped value")
    d("ts(Number t, T v) -> Timeval of T", scalar=lambda t, v: Timeval(Time(float(t)), v), null_propagating=False,
      doc="A timestamped value (time in seconds since 1970)")
    d("time(Timeval of T tv) -> Time", scalar=lambda tv: tv.time, doc="The time of a timestamped value")
    d("value(Timeval of T tv) -> T", scalar=lambda tv: tv.value, doc="The value of a timestamped value")
    d("iso(Time t) -> Charstring", scalar=lambda t: t.iso(), doc="A time as ISO 8601 text")
