"""The federation's largest statement (64 KiB: an `in` list of 12,757 numbers) parses to every
element, in order, each with its own position — the parse the soak's hostile clients send."""
from __future__ import annotations

import sys
from pathlib import Path

from streamql import ast as A
from streamql.syntax import parse_one

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_core import long_in_list  # noqa: E402


def test_a_64_kib_in_list_keeps_every_element_in_order_with_its_position():
    text, n = long_in_list()
    assert 64 * 1024 - 100 < len(text) < 64 * 1024 and n > 12_000
    statement = parse_one(text)
    in_lists = [node for node in statement.walk() if isinstance(node, A.InList)]
    assert len(in_lists) == 1
    items = in_lists[0].items
    assert [item.value for item in items] == list(range(n))
    assert all(type(item.value) is int for item in items)
    for item in items[:: n // 50] + (items[-1],):       # each element where it is in the text
        assert text[item.span.start:item.span.end] == str(item.value)
        assert item.span.line == 1 and item.span.column == item.span.start + 1
    assert text[in_lists[0].span.end - 1] == ")"
