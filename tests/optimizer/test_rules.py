"""Fixture tests per optimizer rule: a query and the plan steps (and rules fired) it must give."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import streamql
from streamql.optimizer import RULES, rule_names
from streamql.local_fleet import LocalFleet

FIXTURES = Path(__file__).parent / "fixtures"


def load_cases():
    for path in sorted(FIXTURES.glob("*.txt")):
        for block in path.read_text().split("# case:")[1:]:
            title, _, rest = block.partition("\n")
            query, _, expected = rest.partition("=>")
            lines = [line.strip() for line in expected.strip().splitlines() if line.strip()]
            yield pytest.param(query.strip(), lines, id=f"{path.stem}: {title.strip()}")


def plan_steps(engine: streamql.Engine, query: str, fleet=None) -> list[str]:
    text = engine.explain(query, fleet=fleet)
    steps, fired, traced = [], "fired: none", False
    for line in text.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("rules fired:"):
            fired, traced = "fired: " + stripped[len("rules fired: "):], True
        elif stripped[:1].isdigit() and ". " in stripped:
            step = stripped.split(". ", 1)[1]
            if step != "Unit":
                steps.append(step)
        elif stripped and not traced:
            steps.append(stripped)   # a step's details on the lines under it (a Remote's fragment)
    return steps + [fired]


def small_fleet() -> LocalFleet:
    """Two edges with known signals for the fleet rules' fixtures (`… from Edge e …`)."""
    fleet = LocalFleet()
    for device, region, temperature in (("a-1", "US", -25.0), ("b-1", "EU", 5.0)):
        edge = streamql.Engine()
        edge.add_signal("t", [temperature], type="Real")
        edge.add_signal("vibration", np.arange(8.0), type="Real")
        fleet.add(device, edge, {"region": region, "kind": "dumper"}, {"limit": -20}, online=device == "a-1")
    return fleet


@pytest.fixture
def engine():
    engine = streamql.Engine()
    engine.add_signal("s", np.random.default_rng(0).normal(size=1000))
    return engine


@pytest.mark.parametrize("query, expected", list(load_cases()))
def test_rule_fixture(engine, query, expected):
    fleet = small_fleet() if " Edge " in query else None
    assert plan_steps(engine, query, fleet) == expected


def test_every_rule_has_fixtures():
    files = {path.stem for path in FIXTURES.glob("*.txt")}
    assert set(rule_names()) <= files, f"rules without fixtures: {set(rule_names()) - files}"
    assert len(RULES) == 9


def test_every_operation_the_rule_may_fuse_has_a_kernel():
    """elementwise_fusion picks from KERNEL_BINARY/KERNEL_UNARY; physical/kernels.py must run each."""
    from streamql.bound import KERNEL_BINARY, KERNEL_UNARY
    from streamql.physical.kernels import BINARY_TEMPLATES, UNARY_TEMPLATES
    assert set(BINARY_TEMPLATES) == KERNEL_BINARY
    assert set(UNARY_TEMPLATES) == KERNEL_UNARY


def test_optimized_plans_hold_only_plan_nodes(engine):
    """Rules rewrite, operators run: after every rule, the plan is made of logical nodes and
    typed expressions alone, with nothing compiled or running in it."""
    from streamql import logical as L
    from streamql.bound import TExpr
    plan = engine._compile(streamql.parse_one(
        "select stream of mean(w), sqrt(abs(mean(w) * 2 + 1)) from Vector of Real w "
        "where w in winagg(signal_stream('s'), 10, 5) and mean(w) > 0;"), None)
    assert {"window_fusion", "elementwise_fusion"} <= set(plan.rules)
    for node in plan.root.chain():
        assert type(node).__module__ == L.__name__
        for expr in node.expressions():
            for sub in expr.walk():
                assert isinstance(sub, TExpr) and not hasattr(sub, "compile"), type(sub)
