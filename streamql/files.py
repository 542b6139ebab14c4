"""Which files a statement may read: files belong to the operator, not to whoever sends statements.

Every function that opens a path (`csv:file_stream`, `json:file_stream`, `create model … from
'file'`) asks the engine's `FileAccess` first. A path is resolved against the engine's base
directory (relative paths), then to its real location (`..` and symlinks followed, as the
operating system would open it), and must lie inside the files directory; anything else is
refused with the same message whether or not the file exists, so a refusal tells nothing about
the machine beyond the directory the operator chose.

    Engine()                       any file the process can read (a program's own engine, the shell)
    Engine(files="data/")          only files under data/ (relative paths resolve against it)
    Engine(files=None)             no files at all (the federation's default)

Opening a file still races a symlink swapped in between the check and the open; the directory is
the operator's, so only someone who can already write there could win that race.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import QueryRuntimeError

ANYWHERE = Path("/")   # the local engine's default: the process's own permissions decide


class FileAccess:
    """The files directory of an engine (`root`; None: no file may be read) and the base that
    relative paths start from (the working directory when there is neither)."""

    def __init__(self, root: str | os.PathLike | None, base: str | os.PathLike | None = None):
        self.root = Path(os.path.realpath(root)) if root is not None else None
        if base is not None:
            self.base = Path(base)
        elif self.root is not None and self.root != ANYWHERE:
            self.base = self.root
        else:
            self.base = None

    @property
    def anywhere(self) -> bool:
        return self.root == ANYWHERE

    def resolve(self, path: str, what: str) -> Path:
        """The real path of `path` when `what` (a function's name, a statement) may read it;
        else QueryRuntimeError naming the allowed directory (not whether the file exists)."""
        if self.root is None:
            raise QueryRuntimeError(f"{what} cannot read files here: this engine has no files directory "
                                    "(its operator can configure one)")
        if not isinstance(path, str) or not path or "\x00" in path:
            raise QueryRuntimeError(f"{what} needs a file path, not {path!r}")
        candidate = Path(path)
        if not candidate.is_absolute():
            candidate = (self.base if self.base is not None else Path.cwd()) / candidate
        try:
            real = Path(os.path.realpath(candidate))
        except (ValueError, OSError):   # a NUL byte, a path too long, a symlink loop
            raise QueryRuntimeError(f"{what} cannot read {path!r}: not a usable path") from None
        if self.anywhere or real == self.root or self.root in real.parents:
            return real
        raise QueryRuntimeError(f"{what} reads only files inside {self.root}; {path!r} is outside it")

    def __repr__(self) -> str:
        return f"FileAccess({'none' if self.root is None else str(self.root)})"
