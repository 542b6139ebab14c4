"""A fake engine with the narrow interface the real one gives the model subsystem."""
from __future__ import annotations

import io
import re
import zipfile

import numpy as np

from streamql.errors import QueryError, QueryValidationError
from streamql.models import ModelRegistry

_NUMBERS = r"\[[^\]]*\]"


class FakeEngine:
    """`.models`, `.execute(text)` and `.start(text)`, understanding just enough StreamQL for
    bundle tests: `create function F(...) ... as predict('M', w);` and
    `validate 'name' check predict('M', [..]) => [..] [check F([..]) => [..]];`."""

    def __init__(self, fail_on: str | None = None):
        self.models = ModelRegistry()
        self.executed: list[str] = []
        self.started: list[str] = []
        self.functions: dict[str, str] = {}
        self.fail_on = fail_on

    def execute(self, text: str):
        self.executed.append(text)
        if self.fail_on and self.fail_on in text:
            raise QueryError(f"fake failure on {self.fail_on}")
        for m in re.finditer(r"create\s+function\s+(\w+)\s*\([^)]*\)[^;]*?as\s+predict\('([^']+)'", text, re.I):
            self.functions[m.group(1).lower()] = m.group(2)
        for m in re.finditer(r"validate\s+'([^']*)'(.*?);", text, re.I | re.S):
            self._validate(m.group(1), m.group(2))
        return []

    def _call(self, expr: str):
        m = re.fullmatch(rf"\s*predict\('([^']+)',\s*({_NUMBERS})\s*\)\s*", expr)
        if m:
            return self.models.get(m.group(1)).model.predict(eval(m.group(2)))
        m = re.fullmatch(rf"\s*(\w+)\(\s*({_NUMBERS})\s*\)\s*", expr)
        if m and m.group(1).lower() in self.functions:
            return self.models.get(self.functions[m.group(1).lower()]).model.predict(eval(m.group(2)))
        raise QueryError(f"the fake engine cannot evaluate {expr.strip()!r}")

    def _validate(self, name: str, body: str) -> None:
        for check in re.split(r"\bcheck\b", body)[1:]:
            expr, _, expected = check.partition("=>")
            got = np.asarray(self._call(expr), dtype=float)
            want = np.asarray(eval(expected.strip()), dtype=float)
            if got.shape != want.shape or not np.allclose(got, want, rtol=1e-9, atol=0):
                raise QueryValidationError(f"validate '{name}': {expr.strip()} gave {got.tolist()},"
                                           f" expected {want.tolist()}")

    def start(self, text: str):
        self.started.append(text)
        return _Handle(text)


class _Handle:
    def __init__(self, text):
        self.text = text
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


def rewrite_zip(data: bytes, change) -> bytes:
    """Copy a bundle zip, letting `change(name, content)` return new content (None drops it)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            content = change(info.filename, src.read(info))
            if content is not None:
                dst.writestr(info.filename, content)
    return out.getvalue()


def count_calls(model) -> dict:
    """Count a TFLite model's interpreter invokes and input resizes (live: read it afterwards)."""
    calls = {"resize": 0, "invoke": 0}
    it = model._interpreter
    real_resize, real_invoke = it.resize_tensor_input, it.invoke

    def resize(*a, **k):
        calls["resize"] += 1
        return real_resize(*a, **k)

    def invoke():
        calls["invoke"] += 1
        return real_invoke()

    it.resize_tensor_input, it.invoke = resize, invoke
    return calls
