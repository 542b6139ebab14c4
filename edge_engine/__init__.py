"""The edge engine: the daemon that runs on each device (`streamql edge`).

- `edge_engine.daemon`      — `EdgeDaemon`: one device's engine, signals, bundles, buffer and link
- `edge_engine.link`        — the WebSocket to the federation: handshake, heartbeat, hostile frames, backoff
- `edge_engine.fragments`   — query fragments: limits, credit-based backpressure, cancel, one `end` each
- `edge_engine.fragment_starts` — fragment threads started a few at a time until compiled
- `edge_engine.deployments` — deploy (chunked), rollback, undeploy of signed bundles, switched atomically
- `edge_engine.autostart`   — autostart queries of deployed bundles and the flows their results go to
- `edge_engine.publish`     — those results through the buffer to the federation (`publish` frames)
- `edge_engine.store`       — the store directory: atomic writes, deployment state, bundle files, chunks
- `edge_engine.simulate`    — many simulated edges in one process (`streamql edge --simulate N`)
- `edge_engine.cli`         — the `streamql edge` command (`python -m edge_engine` runs it alone)
- `edge_engine.testing`     — a fake federation and signed test bundles, for tests and benchmarks

Building blocks, each usable alone:
- `edge_engine.config`  — edge.toml and command-line flags → `EdgeConfig`
- `edge_engine.signals` — signal drivers (simulated, CSV replay, UDP JSON lines, callables)
- `edge_engine.buffer`  — the crash-safe, bounded store-and-forward buffer for results
- `edge_engine.health`  — health sampling for the heartbeat

It talks to the federation only over the wire protocol (`streamql.wire`, docs/protocol.md).
"""
