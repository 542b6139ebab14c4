"""How running a piece of input ended: shared by the runner and the backslash commands."""
from __future__ import annotations

import enum


class Status(enum.Enum):
    OK = "ok"
    ERROR = "error"
    INTERRUPTED = "interrupted"
    QUIT = "quit"
