"""The registry's old import path (`streamql.library.registry`): the declarations now live in
`streamql.registry`, below the implementations. Kept so that code importing the old path works."""
from ..registry import (AGGREGATE, SCALAR, SOURCE, STREAM, AggregateSplit, Library, Overload, Param,
                        parse_signature)

__all__ = ["AGGREGATE", "SCALAR", "SOURCE", "STREAM", "AggregateSplit", "Library", "Overload", "Param",
           "parse_signature"]
