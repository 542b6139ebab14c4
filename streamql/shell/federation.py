"""The shell on a federation: a `Session` over the federation client.

The client is whatever `streamql.connect(url, token)` returns. The shell needs from it:

    client.query(text)   -> result    a query's rows as they arrive (Result-like, .close() cancels)
    client.execute(text) -> [result]  any other statement, one result (with .message)
    client.functions()   -> [dict]    registry entries, as Engine.functions()
    client.edges()       -> [dict]    one per device: 'id', 'metadata' (dict), 'online', 'signals', …
    client.models()      -> [str | dict with 'name']
  optional (used when present, else derived or empty):
    client.signals(), client.flows(), client.types(), client.metadata_keys(), client.close()
    client.deployment_progress(deployment_id) -> iterator of progress records
        used when a deploy/rollback/undeploy result carries `.deployment_id`: the shell
        then shows the rollout; see `shell/progress.py` for the record shape.
"""
from __future__ import annotations

import threading
from typing import Any, Iterator
from urllib.parse import urlparse

from .. import ast as A
from ..client import connect as client_connect
from ..syntax import parse_one
from ..types import BUILTIN_NAMES
from .session import QUERY_NODES, Section

FLEET_STATEMENTS = (A.Deploy, A.Rollback, A.Undeploy)


class ProgressResult:
    """A deployment's progress records as a result of kind 'deployment'."""

    kind = "deployment"
    columns: list = []
    types: list = []

    def __init__(self, records: Iterator[dict], message: str | None = None, stop: threading.Event | None = None):
        self._records = iter(records)
        self.message = message
        self._stop = stop        # ends the client's polling between two polls

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return next(self._records)

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        close = getattr(self._records, "close", None)
        if close is not None:
            try:
                close()
            except ValueError:  # a generator running in the worker thread: it stops on its own
                pass


class FederationSession:
    federated = True

    def __init__(self, client: Any, url: str = ""):
        self.client = client
        self.label = urlparse(url).netloc or url or "federation"

    def run(self, text: str):
        statement = parse_one(text)
        if isinstance(statement, QUERY_NODES):
            return self.client.query(text)
        results = self.client.execute(text)
        result = results[0] if isinstance(results, (list, tuple)) else results
        if isinstance(statement, FLEET_STATEMENTS):
            # the client's result is the started deployment (its id as a row); the shell shows
            # the rollout itself, as progress records, until every device has settled
            deployment = getattr(result, "deployment_id", None)
            progress = getattr(self.client, "deployment_progress", None)
            if deployment is not None and progress is not None:
                stop = threading.Event()
                return ProgressResult(progress(deployment, stop=stop), getattr(result, "message", None), stop)
        return result

    def _optional(self, name: str, default):
        method = getattr(self.client, name, None)
        return method() if callable(method) else default

    def functions(self) -> list[dict]:
        return list(self.client.functions())

    def types(self) -> list[str]:
        return list(dict.fromkeys([*BUILTIN_NAMES.values(), *self._optional("types", [])]))

    def signals(self) -> list[str]:
        signals = self._optional("signals", None)
        if signals is None:
            signals = sorted({s for e in self.edges() for s in (e.get("signals") or [])})
        return list(signals)

    def models(self) -> list[str]:
        return [m["name"] if isinstance(m, dict) else str(m) for m in self.client.models()]

    def flows(self) -> list[str]:
        return list(self._optional("flows", []))

    def variables(self) -> list[str]:
        return list(self._optional("variables", []))

    def edges(self) -> list[dict]:
        return list(self.client.edges())

    def metadata_keys(self) -> list[str]:
        keys = self._optional("metadata_keys", None)
        if keys is None:
            keys = sorted({k for e in self.edges() for k in (e.get("metadata") or {})})
        return list(keys)

    def describe(self, name: str) -> list[Section]:
        sections = []
        lower = name.lower()
        overloads = [f for f in self.functions() if f.get("name", "").lower() == lower]
        if overloads:
            lines = []
            for f in overloads:
                lines.append(f["signature"])
                if f.get("doc"):
                    lines.append("    " + f["doc"])
            sections.append(Section("function", lines))
        if name in self.metadata_keys():
            values = sorted({str((e.get("metadata") or {}).get(name)) for e in self.edges()
                             if name in (e.get("metadata") or {})})
            sections.append(Section("edge metadata key", [f"{name}(Edge e) -> Object",
                                                          "values: " + ", ".join(values[:20])]))
        for edge in self.edges():
            if str(edge.get("id")) == name:
                sections.append(Section("edge", [f"{k}: {v}" for k, v in edge.items()]))
        for model in self.client.models():
            if isinstance(model, dict) and model.get("name") == name:
                sections.append(Section("model", [f"{k}: {v}" for k, v in model.items()]))
        return sections

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if callable(close):
            close()


def connect(url: str, token: str | None) -> FederationSession:
    """A session on the federation at `url`."""
    return FederationSession(client_connect(url, token), url)
