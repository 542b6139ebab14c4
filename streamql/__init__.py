"""StreamQL: an object-functional query language over bags, vectors and endless streams.

    import streamql
    engine = streamql.Engine()
    for row in engine.query("select x * 2 from Integer x where x in iota(1, 3);"):
        print(row)
"""
from .errors import (FleetError, ModelError, QueryCancelled, QueryError, QueryLimitError, QueryNameError,
                     QueryParseError, QueryRuntimeError, QueryTypeError, QueryValidationError, StoreError)
from .syntax import parse, parse_one
from .values import Bag, EdgeRef, FunctionRef, Obj, Time, Timeval

__version__ = "0.1.0"


def __getattr__(name):
    # The engine pulls in numpy and the whole library: import it only when asked for.
    if name in ("Engine", "Result", "QueryHandle"):
        from . import engine, result
        return {"Engine": engine.Engine, "Result": result.Result, "QueryHandle": result.QueryHandle}[name]
    if name == "connect":
        from .client import connect
        return connect
    raise AttributeError(f"module 'streamql' has no attribute {name!r}")


__all__ = ["Engine", "Result", "QueryHandle", "connect", "parse", "parse_one", "QueryError", "QueryParseError",
           "QueryTypeError", "QueryNameError", "QueryRuntimeError", "QueryLimitError", "QueryCancelled",
           "QueryValidationError", "ModelError", "StoreError", "FleetError", "Bag", "Time", "Timeval", "Obj",
           "EdgeRef", "FunctionRef"]
