"""Python functions the foreign-function tests allow (tests/osql/test_osql_foreign.py)."""
import numpy as np

SEEN = []


def scale(values, factor):
    SEEN.append(type(values))
    return values * factor


def norm(values):
    return float(np.linalg.norm(values))


def fail(x):
    raise ValueError(f"cannot handle {x}")


def wrong(x):
    return "not a number"


NOT_CALLABLE = 42
