"""Completion: keywords, functions (signatures as meta), types, variables, and inside strings the
names a call expects (signals, models, flows, edge ids, metadata keys), from the session's catalog.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from .formatting import FORMATS
from .lexer import ERROR, UNCLOSED_STRING, Token, keyword_set, scan

# A string argument of these calls names a …  (function, argument index) → what
STRING_ARGUMENTS = {
    ("signal_stream", 0): "signal", ("signal_value", 0): "signal", ("ts_signal_stream", 0): "signal",
    ("edges_with_signal", 0): "signal", ("simsig", 0): "signal",
    ("predict", 0): "model", ("model_info", 0): "model", ("model_version", 1): "model",
    ("subscribe", 0): "flow", ("publish", 1): "flow",
    ("meta", 1): "metadata key", ("capability", 1): "capability",
}
TYPE_POSITIONS = {"FROM", "OF", "UNDER", "ARROW", "DELETE", "CAST_AS"}
CLAUSES = {"SELECT", "FROM", "WHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "TO", "ON", "SET"}


@dataclass
class Catalog:
    """What completion offers, fetched from the session once and again after each change."""

    functions: dict[str, list[str]] = field(default_factory=dict)   # name → signatures
    types: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    flows: list[str] = field(default_factory=list)
    variables: list[str] = field(default_factory=list)
    edges: list[str] = field(default_factory=list)
    metadata_keys: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, session) -> "Catalog":
        catalog = cls()
        for entry in _safe(session.functions):
            name = entry.get("name", "")
            if name[:1].isalpha():
                catalog.functions.setdefault(name, []).append(entry.get("signature", name))
        catalog.types = list(dict.fromkeys(_safe(session.types)))
        catalog.signals = list(_safe(session.signals))
        catalog.models = list(_safe(session.models))
        catalog.flows = list(_safe(session.flows))
        catalog.variables = list(_safe(getattr(session, "variables", lambda: [])))
        if session.federated:
            catalog.edges = [str(e.get("id")) for e in _safe(session.edges) if e.get("id") is not None]
            catalog.metadata_keys = list(_safe(session.metadata_keys))
        return catalog


def _safe(call) -> list:
    try:
        return list(call() or [])
    except Exception:  # noqa: BLE001 - completion must never break typing
        return []


class StreamQLCompleter(Completer):
    def __init__(self, session, commands: Iterable[str] = ()):
        self.session = session
        self.commands = sorted(commands)
        self._catalog: Catalog | None = None
        self._keywords = sorted(keyword_set())
        self._paths = PathCompleter(expanduser=True)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog.of(self.session)
        return self._catalog

    def refresh(self) -> None:
        """Forget the catalog: the next completion asks the session again."""
        self._catalog = None

    def prefetch(self) -> None:
        """Ask the session for the catalog now (a federation answers over the network), so that
        the first keystrokes are not held up by it."""
        try:
            self.catalog()
        except Exception:  # noqa: BLE001 - completion must never stop the shell
            pass

    # -------------------------------------------------------------------------------------
    def get_completions(self, document: Document, complete_event: CompleteEvent):
        try:
            yield from self._completions(document, complete_event)
        except Exception:  # noqa: BLE001 - completion must never break typing
            return

    def _completions(self, document: Document, complete_event: CompleteEvent):
        before = document.text_before_cursor
        stripped = before.lstrip()
        if stripped.startswith("\\"):
            yield from self._meta(stripped, document, complete_event)
            return
        tokens = list(scan(before))
        # only the statement being typed matters
        for i in range(len(tokens) - 1, -1, -1):
            if tokens[i].type == "SEMICOLON":
                tokens = tokens[i + 1:]
                break
        last = tokens[-1] if tokens else None
        if last is not None and last.type == UNCLOSED_STRING:
            word = last.text[1:]
            yield from self._strings(tokens[:-1], word, complete_event)
            return
        if last is not None and last.end == len(before) and last.type in ("SESSION_VARIABLE", "COLON") \
                and len(tokens) >= 2 and tokens[-2].type == "NAME" and tokens[-2].end == last.start:
            word = tokens[-2].text + last.text  # a namespaced function being typed: csv:fi
            yield from _matches(word, self._candidates(tokens[:-2]), start=-len(word))
            return
        if last is not None and last.end == len(before) and (last.type == "SESSION_VARIABLE"
                                                               or last.type == "COLON"):
            word = last.text[1:] if last.type == "SESSION_VARIABLE" else ""
            yield from _matches(word, [(":" + v, "session variable") for v in self.catalog.variables],
                                start=-(len(word) + 1))
            return
        word, context = "", tokens
        if last is not None and last.end == len(before) and (last.text[:1].isalpha() or last.text[:1] == "_"):
            word, context = last.text, tokens[:-1]
        elif last is not None and last.type in ("LINE_COMMENT", "BLOCK_COMMENT") and last.end == len(before):
            return
        if not word and not complete_event.completion_requested:
            return
        yield from _matches(word, self._candidates(context), start=-len(word),
                            upper=word.isupper() and len(word) > 1)

    def _candidates(self, context: list[Token]) -> list[tuple[str, str]]:
        significant = [t for t in context if not t.trivia]
        prev = significant[-1] if significant else None
        prev_type = prev.type if prev else None
        catalog = self.catalog
        types = [(t, "type") for t in catalog.types]
        if prev_type == "AS" and len(significant) >= 3 and _inside_call(significant[:-1]) == ("cast", None):
            prev_type = "CAST_AS"
        if prev_type in TYPE_POSITIONS or (prev_type == "COMMA" and _clause(significant) == "FROM") \
                or (prev_type in ("LPAR", "COMMA") and _in_parameter_list(significant)):
            return types
        if prev_type == "INTO" or (prev_type == "TABLE" and len(significant) >= 2
                                   and significant[-2].type == "DROP"):
            return types
        if prev_type == "FUNCTION" and len(significant) >= 2 and significant[-2].type == "DROP":
            return [(name, "function") for name in catalog.functions]
        out = [(k, "keyword") for k in self._keywords]
        for name, signatures in sorted(catalog.functions.items()):
            meta = signatures[0] + (f"  (+{len(signatures) - 1} more)" if len(signatures) > 1 else "")
            out.append((name, meta))
        out += types
        out += [(v, "variable") for v in _declared_variables(significant)]
        out += [(k, "metadata key") for k in catalog.metadata_keys]
        return out

    def _strings(self, context: list[Token], word: str, complete_event: CompleteEvent):
        significant = [t for t in context if not t.trivia]
        catalog = self.catalog
        call = _inside_call(significant)
        what = STRING_ARGUMENTS.get(call) if call else None
        prev = significant[-1].type if significant else None
        if prev == "MODEL":
            what = "model"
        elif what is None and _after_id_comparison(significant):
            what = "edge"
        pools = {"signal": catalog.signals, "model": catalog.models, "flow": catalog.flows,
                 "metadata key": catalog.metadata_keys, "edge": catalog.edges, "capability": []}
        if what is not None:
            candidates = [(n, what) for n in pools[what]]
        else:
            candidates = [(n, kind) for kind in ("signal", "model", "flow", "edge") for n in pools[kind]]
        yield from _matches(word, candidates, start=-len(word))

    def _meta(self, text: str, document: Document, complete_event: CompleteEvent):
        parts = text[1:].split(None, 1)
        if len(parts) <= 1 and not text.endswith((" ", "\t")):
            word = parts[0] if parts else ""
            yield from _matches(word, [(c, "command") for c in self.commands], start=-len(word))
            return
        command = parts[0].lower()
        argument = parts[1] if len(parts) > 1 else ""
        if command in ("read", "i"):
            sub = Document(argument, len(argument))
            yield from self._paths.get_completions(sub, complete_event)
        elif command == "output":
            yield from _matches(argument, [(f, "format") for f in FORMATS], start=-len(argument))
        elif command == "timing":
            yield from _matches(argument, [("on", ""), ("off", "")], start=-len(argument))
        elif command in ("describe", "d", "functions"):
            catalog = self.catalog
            pool = [(n, "function") for n in catalog.functions]
            if command != "functions":
                pool += [(t, "type") for t in catalog.types] + [(m, "model") for m in catalog.models] + \
                    [(s, "signal") for s in catalog.signals]
            yield from _matches(argument, pool, start=-len(argument))
        elif command == "edges":
            yield from _matches(argument, [(e, "edge") for e in self.catalog.edges], start=-len(argument))


def _matches(word: str, candidates: list[tuple[str, str]], start: int, upper: bool = False):
    """Prefix matches first, then names containing the word; each name once."""
    lower = word.lower()
    seen, prefix, inner = set(), [], []
    for name, meta in candidates:
        key = name.lower()
        if key in seen or key == lower:
            continue
        if key.startswith(lower):
            prefix.append((name, meta))
            seen.add(key)
        elif len(lower) > 2 and lower in key:
            inner.append((name, meta))
            seen.add(key)
    for name, meta in prefix + inner:
        text = name.upper() if upper and meta == "keyword" else name
        yield Completion(text, start_position=start, display_meta=meta)


def _inside_call(tokens: list[Token]) -> tuple[str, int | None] | None:
    """(function name, argument index) of the innermost unclosed call the tokens end inside."""
    depth, commas = 0, 0
    for i in range(len(tokens) - 1, -1, -1):
        kind = tokens[i].type
        if kind in ("RPAR", "RSQB", "RBRACE"):
            depth += 1
        elif kind in ("LPAR", "LSQB", "LBRACE"):
            if depth == 0:
                if kind != "LPAR" or i == 0:
                    return None
                name = tokens[i - 1]
                if name.type == "CAST":
                    return ("cast", None)
                if name.type == "NAME" or name.type == "QUALIFIED_NAME" or name.text[:1].isalpha():
                    return (name.text.lower(), commas)
                return None
            depth -= 1
        elif kind == "COMMA" and depth == 0:
            commas += 1
        elif kind == "SEMICOLON":
            return None
    return None


def _clause(tokens: list[Token]) -> str | None:
    """The clause keyword the tokens end in (FROM, WHERE, …), at the outermost open level."""
    depth = 0
    for token in reversed(tokens):
        if token.type == "RPAR":
            depth += 1
        elif token.type == "LPAR":
            if depth == 0:
                return None
            depth -= 1
        elif depth == 0 and token.type in CLAUSES:
            return token.type
    return None


def _in_parameter_list(tokens: list[Token]) -> bool:
    """Inside `create function name(` … where a parameter's type comes next."""
    depth = 0
    for i in range(len(tokens) - 1, -1, -1):
        kind = tokens[i].type
        if kind == "RPAR":
            depth += 1
        elif kind == "LPAR":
            if depth == 0:
                return i >= 3 and tokens[i - 2].type == "FUNCTION" and tokens[i - 3].type == "CREATE"
            depth -= 1
    return False


def _after_id_comparison(tokens: list[Token]) -> bool:
    """`id(e) = '…` or `id(e) in ('a', '…`: an edge id comes next."""
    i = len(tokens) - 1
    while i >= 0 and tokens[i].type in ("COMMA", "STRING", "LPAR"):
        i -= 1
    if i < 0 or tokens[i].type not in ("EQUAL", "IN", "COMPARE_OP"):
        return False
    i -= 1
    if i < 0 or tokens[i].type != "RPAR":
        return False
    depth = 0
    while i >= 0:
        if tokens[i].type == "RPAR":
            depth += 1
        elif tokens[i].type == "LPAR":
            depth -= 1
            if depth == 0:
                return i >= 1 and tokens[i - 1].text.lower() == "id"
        i -= 1
    return False


def _declared_variables(tokens: list[Token]) -> list[str]:
    """The names declared in the statement's from clause (`from Real x, Vector of Real w`)."""
    names, in_from, last_name = [], False, None
    for token in tokens:
        kind = token.type
        if kind == "FROM":
            in_from, last_name = True, None
        elif in_from and kind == "NAME":
            last_name = token.text
        elif in_from and kind in ("COMMA", "WHERE", "GROUP", "ORDER", "LIMIT", "HAVING", "SEMICOLON", ERROR):
            if last_name:
                names.append(last_name)
            last_name = None
            if kind != "COMMA":
                in_from = False
    return names
