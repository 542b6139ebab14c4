"""The edge engine: the daemon that runs on each device (`streamql edge`).

Building blocks, each usable alone:
- `edge_engine.config`  — edge.toml and command-line flags → `EdgeConfig`
- `edge_engine.signals` — signal drivers (simulated, CSV replay, UDP JSON lines, callables)
- `edge_engine.buffer`  — the crash-safe, bounded store-and-forward buffer for results
- `edge_engine.health`  — health sampling for the heartbeat

It talks to the federation only over the wire protocol (`streamql.wire`, docs/protocol.md).
"""
