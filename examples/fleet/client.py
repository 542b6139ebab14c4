"""A federation from a Python program: the same query/execute as a local Engine, plus the fleet.

    python examples/fleet/client.py URL TOKEN      (the demo prints both)
"""
from __future__ import annotations

import sys

import streamql


def main(url: str, token: str) -> None:
    fleet = streamql.connect(url, token)
    print(len(fleet.edges()), "edges")

    by_region = fleet.query("select region(e), count(e) from Edge e group by region(e) order by region(e);")
    print(by_region.columns, list(by_region))

    # A continuous fleet query: rows arrive as the edges produce them; closing it cancels them.
    cold = fleet.query("select stream of id(e), signal_value('outside_temperature')@e from Edge e, Real t "
                       "where t in heartbeat(1)@e and signal_value('outside_temperature')@e < -20;")
    for n, (edge, temperature) in enumerate(cold):
        print(f"{edge} is at {temperature:.1f} °C")
        if n == 4:
            break
    cold.close()  # cancels the fragments on the edges

    # A finished query reports every selected device's outcome.
    speeds = fleet.query("select id(e), avg(x) from Edge e, Real x "
                         "where x in vectorof(first_n(signal_stream('engine_speed'), 20))@e group by id(e);")
    print(len(list(speeds)), "devices answered;", {s["outcome"] for s in speeds.status.values()})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
