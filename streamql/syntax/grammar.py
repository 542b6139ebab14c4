"""The grammar and the LALR parser built from it, once per process (cached on disk between
processes), with a fast loop over lark's own parse table for valid text."""
from __future__ import annotations

import re
import threading
from importlib import resources
from pathlib import Path

from lark import Lark, Token
from lark.lexer import ContextualLexer, _regexp_has_newline

from .transformer import ToAst

GRAMMAR_FILE = "streamql.lark"


def grammar_text() -> str:
    """The grammar, from the installed package or (running from a checkout) the repository."""
    try:
        return resources.files("streamql.grammar").joinpath(GRAMMAR_FILE).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        checkout = Path(__file__).resolve().parents[2] / "grammar" / GRAMMAR_FILE
        return checkout.read_text(encoding="utf-8")


_lock = threading.Lock()


class _WholeWords:
    """Lets the contextual lexer always consider NAME, so that a keyword matches whole words only:
    where `in` fits but a name does not, `Integer` is one (unexpected) name, not `In` + `teger`."""

    always_accept = ("NAME",)

    def process(self, stream):
        return stream


class _StateLexer(ContextualLexer):
    """Lark's contextual lexer — in each parser state only the terminals that state accepts —
    as one regular expression per set of accepted terminals, with keywords looked up in a dict:
    the scanners `_FastParse` lexes with (a third of the cost of lark's lexing, which was half of
    parsing). Keywords are whole words (`_WholeWords`): a word is NAME unless it spells a keyword
    the state accepts, as lark's "unless" callback decides. Lark's own `lex` stays for lark's
    parser, which runs only where the fast loop gives up (bad input: lark words the error)."""

    def __init__(self, conf, states, always_accept=()):
        super().__init__(conf, states, always_accept)
        self._accepts = {state: frozenset(accepts) | set(conf.ignore) | set(always_accept)
                         for state, accepts in states.items()}
        self._ignore = frozenset(conf.ignore)
        self._terminals = conf.terminals_by_name
        self._keywords = {t.pattern.value.lower(): t.name for t in conf.terminals
                          if t.pattern.type == "str" and t.pattern.value.isalpha()}
        self._newlines = frozenset(t.name for t in conf.terminals if _regexp_has_newline(t.pattern.to_regexp()))
        self._by_accepts: dict[frozenset, tuple] = {}
        self._by_state: dict[int, tuple] = {}

    def _scanner_for(self, state: int) -> tuple:
        """(one regex over the state's accepted terminals, {word: keyword terminal it accepts})."""
        accepts = self._accepts[state]
        found = self._by_accepts.get(accepts)
        if found is None:
            keywords = {word: name for word, name in self._keywords.items() if name in accepts}
            terminals = [self._terminals[name] for name in accepts
                         if name in self._terminals and name not in keywords.values()
                         and not (self._terminals[name].pattern.type == "str"
                                  and self._terminals[name].pattern.value.isalpha())]
            # lark's order: priority, then the longest possible match first
            terminals.sort(key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value), t.name))
            regex = re.compile("|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in terminals))
            found = self._by_accepts[accepts] = (regex.match, keywords)
        self._by_state[state] = found
        return found


def parser() -> Lark:
    """The LALR parser, built once per process and cached on disk between processes. Threads
    asking at once wait for the one building it (an edge starting 25 fragments at once built it 25
    times over, one after the other, before any of them ran)."""
    built = _built.get("parser")
    if built is None:
        with _lock:
            built = _built.get("parser")
            if built is None:
                built = _built["parser"] = Lark(
                    grammar_text(), parser="lalr", lexer="contextual", strict=True, maybe_placeholders=True,
                    transformer=ToAst(), cache=True, postlex=_WholeWords(), _plugins={"ContextualLexer": _StateLexer})
    return built


_built: dict = {}      # "parser", "fast": built once (parser(), _fast_parse())


class _FastParse:
    """The LALR loop of lark over lark's own parse table and callbacks, with the lexer inlined
    and the pass-through reductions of `?rule`s (an atom rising through eight precedence levels)
    done without calls. Parsing was most of the time it takes to compile a query.

    It only ever parses text that is valid: at the first token the table has no action for,
    or text no terminal matches, it gives up (returns None) and lark parses the text again to
    raise its usual error. `tests/core/test_core_lexer.py` holds both to the same trees."""

    def __init__(self, lark: Lark):
        frontend = lark.parser
        table = frontend.parser._parse_table
        callbacks = frontend.parser.parser.callbacks
        if any(isinstance(key, str) for key in callbacks):
            raise TypeError("terminal callbacks are not supported by the fast parse")
        start = frontend.parser_conf.start[0]
        self.start_state, self.end_state = table.start_states[start], table.end_states[start]
        lexer = frontend.lexer
        self.lexer: _StateLexer = getattr(lexer, "lexer", lexer)
        rules = {}
        for actions in table.states.values():
            for _, (action, arg) in actions.items():
                if action.name != "Shift" and id(arg) not in rules:
                    callback = callbacks[arg]
                    size = len(arg.expansion)
                    passthrough = size == 1 and type(callback).__name__ == "ExpandSingleChild"
                    rules[id(arg)] = (size, arg.origin.name, None if passthrough else callback)
        # state → terminal → (True, next state) for a shift, (False, rule) for a reduce
        self.states = {state: {kind: (True, arg) if action.name == "Shift" else (False, rules[id(arg)])
                               for kind, (action, arg) in actions.items()}
                       for state, actions in table.states.items()}

    def parse(self, text: str):
        states, lexer = self.states, self.lexer
        by_state, ignore, newlines = lexer._by_state, lexer._ignore, lexer._newlines
        end_state = self.end_state
        state_stack, value_stack = [self.start_state], []
        pos, line, line_start, size_of_text = 0, 1, 0, len(text)
        token = None
        new_token = _NEW_TOKEN
        while True:
            state = state_stack[-1]
            kind = "$END"
            while pos < size_of_text:
                match, keywords = by_state.get(state) or lexer._scanner_for(state)
                found = match(text, pos)
                if found is None:
                    return None
                kind = found.lastgroup
                value = found.group()
                stop = found.end()
                if kind in ignore:
                    if kind in newlines and "\n" in value:
                        line += value.count("\n")
                        line_start = pos + value.rindex("\n") + 1
                    pos = stop
                    kind = "$END"
                    continue
                if kind == "NAME":
                    kind = keywords.get(value.lower(), kind)
                end_line, end_start = line, line_start
                if kind in newlines and "\n" in value:
                    end_line += value.count("\n")
                    end_start = pos + value.rindex("\n") + 1
                token = new_token(kind, value, pos, line, pos - line_start + 1, end_line, stop - end_start + 1, stop)
                pos, line, line_start = stop, end_line, end_start
                break
            while True:
                action = states[state_stack[-1]].get(kind)
                if action is None:
                    return None
                shift, arg = action
                if shift:
                    state_stack.append(arg)
                    value_stack.append(token)
                    break
                size, origin, callback = arg
                if callback is None:           # a `?rule` passing its one child up
                    del state_stack[-1]
                elif size:
                    children = value_stack[-size:]
                    del state_stack[-size:]
                    del value_stack[-size:]
                    value_stack.append(callback(children))
                else:
                    value_stack.append(callback([]))
                state_stack.append(states[state_stack[-1]][origin][1])
                if kind == "$END" and state_stack[-1] == end_state:
                    return value_stack[-1]


# Token(…) goes through a shim for a deprecated keyword; this is the constructor behind it
_NEW_TOKEN = getattr(Token, "_future_new", Token)


def _fast_parse() -> _FastParse:
    fast = _built.get("fast")
    if fast is None:
        made = _FastParse(parser())
        with _lock:
            fast = _built.setdefault("fast", made)
    return fast


def keywords() -> list[str]:
    """Every keyword of the language, lowercase (for highlighting and completion)."""
    return sorted(t.pattern.value for t in parser().terminals
                  if t.pattern.type == "str" and t.pattern.value.isalpha())
