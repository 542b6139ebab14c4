"""StreamQL: an object-functional query language over bags, vectors and endless streams.

    import streamql
    engine = streamql.Engine()
    for row in engine.query("select x * 2 from Integer x where x in iota(1, 3);"):
        print(row)
"""
__version__ = "0.1.0"

from .client import connect  # noqa: E402  (the version is set first: the shell prints it)
from .engine import Engine  # noqa: E402
from .errors import (FleetError, ModelError, QueryCancelled, QueryError, QueryLimitError,  # noqa: E402
                     QueryNameError, QueryParseError, QueryRuntimeError, QueryTypeError,
                     QueryValidationError, StoreError)
from .result import QueryHandle, Result  # noqa: E402
from .statement_cache import StatementCache  # noqa: E402
from .syntax import parse, parse_one  # noqa: E402
from .values import Bag, EdgeRef, FunctionRef, Obj, Time, Timeval  # noqa: E402

__all__ = ["Engine", "Result", "QueryHandle", "connect", "parse", "parse_one", "QueryError", "QueryParseError",
           "QueryTypeError", "QueryNameError", "QueryRuntimeError", "QueryLimitError", "QueryCancelled",
           "QueryValidationError", "ModelError", "StoreError", "FleetError", "Bag", "Time", "Timeval", "Obj",
           "EdgeRef", "FunctionRef", "StatementCache"]
