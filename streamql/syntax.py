"""The parser: the only user of Lark. Loads the grammar once (cached) and turns text into the AST.

`parse(text)` returns a `Script`; `parse_one(text)` a single statement; `parse_expression(text)`
one expression. Errors are `QueryParseError`s with the line, column and a caret excerpt, worded
for people ("expected an expression after '+'"), not as parser states.
"""
from __future__ import annotations

import re
import threading
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import ContextualLexer, _regexp_has_newline

from . import ast as A
from .errors import QueryError, QueryParseError, Span
from .values import FunctionRef, Time

GRAMMAR_FILE = "streamql.lark"


def grammar_text() -> str:
    """The grammar, from the installed package or (running from a checkout) the repository."""
    try:
        return resources.files("streamql.grammar").joinpath(GRAMMAR_FILE).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        checkout = Path(__file__).resolve().parent.parent / "grammar" / GRAMMAR_FILE
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


@lru_cache(maxsize=1)
def parser() -> Lark:
    """The LALR parser, built once per process and cached on disk between processes."""
    with _lock:
        return Lark(grammar_text(), parser="lalr", lexer="contextual", strict=True,
                    maybe_placeholders=True, transformer=ToAst(), cache=True, postlex=_WholeWords(),
                    _plugins={"ContextualLexer": _StateLexer})


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


@lru_cache(maxsize=1)
def _fast_parse() -> _FastParse:
    return _FastParse(parser())


def keywords() -> list[str]:
    """Every keyword of the language, lowercase (for highlighting and completion)."""
    return sorted(t.pattern.value for t in parser().terminals
                  if t.pattern.type == "str" and t.pattern.value.isalpha())


# ------------------------------------------------------------------------------- the transformer
def _edges(item, last: bool):
    """The first (or last) positioned piece of a child: a token, a node's span, or inside a tuple."""
    if item is None:
        return None
    if isinstance(item, Token):
        return item
    if isinstance(item, A.Node):
        return item.span
    if isinstance(item, (tuple, list)):
        for sub in (reversed(item) if last else item):
            found = _edges(sub, last)
            if found is not None:
                return found
    return None


def _span(children) -> Span | None:
    """The span from the first to the last positioned child."""
    first = last = None
    for child in children:
        first = _edges(child, False)
        if first is not None:
            break
    for child in reversed(children):
        last = _edges(child, True)
        if last is not None:
            break
    if first is None or last is None:
        return None
    if isinstance(first, Token):
        start, line, column = first.start_pos, first.line, first.column
    else:
        start, line, column = first.start, first.line, first.column
    if isinstance(last, Token):
        end, end_line, end_column = last.end_pos, last.end_line, last.end_column
    else:
        end, end_line, end_column = last.end, last.end_line, last.end_column
    return Span(start, end, line, column, end_line, end_column)


def _token_span(token: Token) -> Span:
    return Span(token.start_pos, token.end_pos, token.line, token.column, token.end_line, token.end_column)


def _unquote(token: str) -> str:
    quote = token[0]
    return token[1:-1].replace(quote * 2, quote)


class _Star:
    """Marks `select *`."""


def _kept(children):
    """Children that are nodes or values: no tokens (keywords, brackets) and no empty placeholders."""
    return [c for c in children if c is not None and (not isinstance(c, Token) or c.type == "NAME_VALUE")]


def _names(children):
    return [str(c) for c in children if isinstance(c, Token) and c.type == "NAME_VALUE"]


def _has(children, token_type: str) -> bool:
    return any(isinstance(c, Token) and c.type == token_type for c in children)


class _Signed:
    """A prefix-signed operand inside an arithmetic list: its signs bind looser than `^`."""

    __slots__ = ("signs", "operand")

    def __init__(self, signs, operand):
        self.signs = signs
        self.operand = operand


def _apply_signs(signs, operand, children=None):
    minus = sum(1 for s in signs if s.type == "MINUS")
    if minus % 2 == 0:
        return operand
    return A.Negate(operand, span=_span([signs[0], operand]))


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "%": 2, ".*": 2, "./": 2, "^": 4, ".^": 4}
_RIGHT = {"^", ".^"}
_UNARY = 3


class _Precedence:
    """Groups a flat `a op b op c …` list by precedence (unary minus between `*` and `^`)."""

    __slots__ = ("items", "pos")

    def __init__(self, items):
        self.items = items
        self.pos = 0

    def parse(self, minimum: int = 1):
        left = self._operand()
        items = self.items
        while self.pos < len(items):
            op = items[self.pos].value
            precedence = _PRECEDENCE[op]
            if precedence < minimum:
                break
            self.pos += 1
            right = self.parse(precedence if op in _RIGHT else precedence + 1)
            left = A.BinaryOp(op, left, right, span=_span([left, right]))
        return left

    def _operand(self):
        item = self.items[self.pos]
        self.pos += 1
        if not isinstance(item, _Signed):
            return item
        operand = item.operand
        items = self.items
        while self.pos < len(items) and _PRECEDENCE[items[self.pos].value] > _UNARY:
            op = items[self.pos].value
            self.pos += 1
            right = self.parse(_PRECEDENCE[op] if op in _RIGHT else _PRECEDENCE[op] + 1)
            operand = A.BinaryOp(op, operand, right, span=_span([operand, right]))
        return _apply_signs(item.signs, operand)


class ToAst(Transformer):
    """Lark rules → AST nodes, applied while parsing. Every grammar rule and alias has a method.

    Names come back from `name` as tokens of type NAME_VALUE so that they keep their position.
    """

    # -- statements -------------------------------------------------------------------------
    def start(self, children):
        return [c for c in children if not isinstance(c, Token)]

    def expr_statement(self, children):
        return A.ExprStatement(children[0], span=children[0].span)

    def select(self, children):
        _, distinct, kind, items, from_, where, group, having, order, limit = children
        return A.Select(None if isinstance(items, _Star) else items, from_ or (), where,
                        group or (), having, order or (), limit, distinct is not None, kind,
                        span=_span(children))

    def stream_kind(self, children):
        return "stream"

    def vector_kind(self, children):
        return "vector"

    def bag_kind(self, children):
        return "bag"

    def select_list(self, children):
        return tuple(children)

    def select_star(self, children):
        return _Star()

    def select_item(self, children):
        expr, _, alias = children
        return A.SelectItem(expr, None if alias is None else str(alias), span=_span(children))

    def from_clause(self, children):
        return tuple(c for c in children if isinstance(c, A.Declaration))

    def declaration(self, children):
        return A.Declaration(children[0], str(children[1]), span=_span(children))

    def where_clause(self, children):
        return children[1]

    def group_clause(self, children):
        return tuple(c for c in children if isinstance(c, A.Expr))

    def having_clause(self, children):
        return children[1]

    def order_clause(self, children):
        return tuple(c for c in children if isinstance(c, A.OrderItem))

    def order_item(self, children):
        expr, direction = children
        return A.OrderItem(expr, direction is not None and direction.type == "DESC", span=_span(children))

    def order_direction(self, children):
        return children[0]

    def limit_clause(self, children):
        return children[1]

    def create_type(self, children):
        names = _names(children)
        properties = tuple(c for c in children if isinstance(c, A.Property))
        return A.CreateType(names[0], tuple(names[1:]), properties, span=_span(children))

    def property(self, children):
        name, type_, key = children
        return A.Property(str(name), type_, key is not None, span=_span(children))

    def create_instances(self, children):
        names = _names(children)
        rows = tuple(c for c in children if isinstance(c, tuple))
        return A.CreateInstances(names[0], tuple(names[1:]), rows, span=_span(children))

    def instance(self, children):
        return tuple(c for c in children if isinstance(c, A.Expr))

    def create_function(self, children):
        name = _names(children)[0]
        parameters = tuple(p for p in children if isinstance(p, A.Parameter))
        result, body = children[-3], children[-1]
        return A.CreateFunction(name, parameters, result, body, span=_span(children))

    def parameter(self, children):
        return A.Parameter(children[0], str(children[1]), span=_span(children))

    def stored_body(self, children):
        return A.StoredBody(span=_span(children))

    def query_body(self, children):
        return children[0]

    def expr_body(self, children):
        return children[0]

    def create_model(self, children):
        _, _, name, (path, expr), _, version = children
        return A.CreateModel(str(name), path, expr, None if version is None else _unquote(version),
                             span=_span(children))

    def model_name(self, children):
        child = children[0]
        return _unquote(child) if child.type == "STRING" else child

    def model_from_file(self, children):
        return (_unquote(children[1]), None)

    def model_from_expr(self, children):
        return (None, children[1])

    def create_table(self, children):
        name = _names(children)[0]
        columns = tuple(c for c in children if isinstance(c, A.ColumnDef))
        unique = tuple(c[1] for c in children if isinstance(c, tuple) and c[0] == "unique")
        primary = next((c[1] for c in children if isinstance(c, tuple) and c[0] == "primary"), ())
        return A.CreateTable(name, columns, unique, primary, span=_span(children))

    def column_def(self, children):
        name, type_, not_, _ = children
        return A.ColumnDef(str(name), type_, not_ is not None, span=_span(children))

    def unique_constraint(self, children):
        return ("unique", tuple(_names(children)))

    def primary_key_constraint(self, children):
        return ("primary", tuple(_names(children)))

    def insert(self, children):
        names = _names(children)
        rows = tuple(c for c in children if isinstance(c, tuple))
        return A.Insert(names[0], tuple(names[1:]), rows, span=_span(children))

    def arguments(self, children):
        return tuple(children)

    def set_function(self, children):
        _, name, _, args, _, value, from_, where = children
        return A.SetFunction(str(name), args or (), value, from_ or (), where, span=_span(children))

    def set_variable(self, children):
        return A.SetVariable(children[1].value[1:], children[2], span=_span(children))

    def delete(self, children):
        _, _, declaration, where = children
        return A.Delete(declaration, where, span=_span(children))

    def drop(self, children):
        _, kind, name = children
        name = _unquote(name) if name.type == "STRING" else str(name)
        return A.Drop(kind, name, span=_span(children))

    def drop_kind(self, children):
        return children[0].value.lower()

    def explain(self, children):
        statement = children[1]
        if isinstance(statement, A.Expr):
            statement = A.ExprStatement(statement, span=statement.span)
        return A.Explain(statement, span=_span(children))

    def validate(self, children):
        return A.Validate(_unquote(children[1]), tuple(children[2:]), span=_span(children))

    def check(self, children):
        return A.Check(children[1], children[2], span=_span(children))

    def deploy(self, children):
        _, _, model, _, version, _, selection, rollout = children
        return A.Deploy(_unquote(model), selection, None if version is None else _unquote(version), rollout,
                        span=_span(children))

    def rollback(self, children):
        _, _, model, _, _, version, _, selection, rollout = children
        return A.Rollback(_unquote(model), selection, None if version is None else _unquote(version), rollout,
                          span=_span(children))

    def undeploy(self, children):
        return A.Undeploy(_unquote(children[2]), children[4], children[5], span=_span(children))

    def rollout(self, children):
        """The options (`_rollout_option`, inlined) arrive as one flat list of tokens, with None
        where a wave size has no PERCENT; read it left to right into one Rollout."""
        def number(token, low, high=None, whole=False):
            value = float(token) if any(c in token for c in ".eE") else int(token)
            if value < low or (high is not None and value > high) or (whole and not isinstance(value, int)):
                rule = "a whole number" if whole else "a number"
                rule += f" from {low:g}" + (f" to {high:g}" if high is not None else " up")
                raise QueryParseError(f"{token} is out of range here: {rule}", _token_span(token))
            return value
        found, i = {}, 0
        while i < len(children):
            head, kind = children[i], children[i].type
            if kind == "OVER" and children[i + 1].type == "NUMBER":
                key, value, i = "waves", number(children[i + 1], 1, whole=True), i + 3
            elif kind == "OVER":
                key, sizes, i = "wave_sizes", [], i + 3
                while i < len(children) and children[i] is not None and children[i].type == "NUMBER":
                    percent = children[i + 1] is not None
                    sizes.append((number(children[i], 1, 100) if percent else number(children[i], 1, whole=True),
                                  percent))
                    i += 2
                value = tuple(sizes)
            elif kind == "ABORT":
                key, value, i = "abort_above", number(children[i + 2], 0, 100), i + 4
            elif kind == "WAVE":
                seconds = number(children[i + 2], 0.001)
                key, i = "wave_timeout", i + 4
                value = seconds * 60 if children[i - 1].type == "MINUTES" else seconds
            else:  # ROLLBACK ON ABORT
                key, value, i = "rollback_on_abort", True, i + 3
            if key in found or {key, *found} >= {"waves", "wave_sizes"}:
                raise QueryParseError("each rollout option may be given once (and the waves one way)",
                                      _token_span(head))
            found[key] = value
        return A.Rollout(**found, span=_span(children))

    def edge_selection(self, children):
        return A.EdgeSelection(children[0], children[1], span=_span(children))

    # -- types --------------------------------------------------------------------------------
    def type_expr(self, children):
        name, _, of = children
        return A.TypeExpr(str(name), of, span=_span(children))

    def type_name(self, children):
        child = children[0]
        return child if child.type == "NAME_VALUE" else Token("NAME_VALUE", child.value, child.start_pos,
                                                            child.line, child.column, child.end_line,
                                                            child.end_column, child.end_pos)

    # -- expressions ----------------------------------------------------------------------
    def or_op(self, children):
        return A.Or(children[0], children[2], span=_span(children))

    def and_op(self, children):
        return A.And(children[0], children[2], span=_span(children))

    def not_op(self, children):
        return A.Not(children[1], span=_span(children))

    def compare(self, children):
        left, op, right = children
        return A.Compare("!=" if op.value == "<>" else op.value, left, right, span=_span(children))

    def equals(self, children):
        return A.Compare("=", children[0], children[1], span=_span(children))

    def in_op(self, children):
        element, negated, _, (kind, target, end) = children
        span = _span([element, end])
        if kind == "list":
            return A.InList(element, target, negated is not None, span=span)
        return A.In(element, target, negated is not None, span=span)

    def in_list(self, children):
        return ("list", tuple(c for c in children if isinstance(c, A.Expr)), children[-1])

    def in_expr(self, children):
        return ("expr", children[0], children[0])

    def between(self, children):
        operand, negated, _, low, _, high = children
        return A.Between(operand, low, high, negated is not None, span=_span(children))

    def like(self, children):
        operand, negated, _, pattern = children
        return A.Like(operand, pattern, negated is not None, span=_span(children))

    def is_null(self, children):
        operand, _, negated, _ = children
        return A.IsNull(operand, negated is not None, span=_span(children))

    def arithmetic(self, children):
        return _Precedence(children).parse()

    def negation(self, children):
        return _apply_signs(children[:-1], children[-1], children)

    def signed_operand(self, children):
        return _Signed(children[:-1], children[-1])

    def paren(self, children):
        return children[1]

    def index(self, children):
        return A.Index(children[0], children[2], span=_span(children))

    def slice(self, children):
        return A.Slice(children[0], children[2], children[3], span=_span(children))

    def field(self, children):
        return A.Field(children[0], str(children[1]), span=_span(children))

    def at_edge(self, children):
        return A.AtEdge(children[0], children[1], span=_span(children))

    def variable(self, children):
        return A.Variable(str(children[0].value), span=_token_span(children[0]))

    def session_variable(self, children):
        return A.SessionVariable(children[0].value[1:], span=_token_span(children[0]))

    def call(self, children):
        args = tuple(c for c in children[2:-1] if c is not None)
        return A.Call(children[0].value, args, span=_span(children))

    def call_query(self, children):
        query = children[2]
        return A.Call(children[0].value, (A.Subquery(query, span=query.span),), span=_span(children))

    def call_star(self, children):
        return A.Call(children[0].value, (), star=True, span=_span(children))

    def call_distinct(self, children):
        return A.Call(children[0].value, (children[3],), distinct=True, span=_span(children))

    def cast(self, children):
        return A.Cast(children[2], children[4], span=_span(children))

    def subquery(self, children):
        return A.Subquery(children[1], span=_span(children))

    def vector(self, children):
        return A.VectorLiteral(tuple(c for c in children[1:-1] if c is not None), span=_span(children))

    def record(self, children):
        return A.RecordLiteral(tuple(c for c in children[1:-1] if c is not None), span=_span(children))

    def record_field(self, children):
        return (_unquote(children[0]), children[1])

    def case(self, children):
        whens = tuple(c for c in children if isinstance(c, tuple))
        otherwise = children[-2]
        return A.Case(whens, otherwise, span=_span(children))

    def case_when(self, children):
        return (children[1], children[3])

    def number(self, children):
        token = children[0]
        text = token.value
        value = float(text) if ("." in text or "e" in text or "E" in text) else int(text)
        return A.Literal(value, span=_token_span(token))

    def string(self, children):
        return A.Literal(_unquote(children[0].value), span=_token_span(children[0]))

    def true(self, children):
        return A.Literal(True, span=_token_span(children[0]))

    def false(self, children):
        return A.Literal(False, span=_token_span(children[0]))

    def null(self, children):
        return A.Literal(None, span=_token_span(children[0]))

    def time(self, children):
        token = children[0]
        try:
            value = Time.parse(token.value[1:-1])
        except ValueError as exc:
            raise QueryParseError(str(exc), _token_span(token)) from None
        return A.Literal(value, span=_token_span(token))

    def function_ref(self, children):
        return A.Literal(FunctionRef(children[0].value[2:-1]), span=_token_span(children[0]))

    def name(self, children):
        token = children[0]
        return Token("NAME_VALUE", token.value, token.start_pos, token.line, token.column,
                     token.end_line, token.end_column, token.end_pos)




# ------------------------------------------------------------------------------------ errors
_FRIENDLY = {
    "SEMICOLON": "';'", "$END": "end of input", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['",
    "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='",
    "DOT": "'.'", "AT": "'@'", "STAR": "'*'", "ARROW": "'->'", "NAME": "a name",
    "NUMBER": "a number", "STRING": "a string", "TIME_LITERAL": "a time", "COMPARE_OP": "a comparison",
    "ADD_OP": "'+' or '-'", "MUL_OP": "an operator", "POW_OP": "'^'", "SESSION_VARIABLE": "a session variable",
    "QUALIFIED_NAME": "a name", "FUNCTION_REF": "a function reference", "MINUS": "'-'", "PLUS": "'+'",
    "__ANON_0": "'=>'", "MORETHAN": "'>'", "LESSTHAN": "'<'",
}
_EXPRESSION_START = {"NUMBER", "STRING", "NAME", "LPAR", "MINUS", "LSQB", "SESSION_VARIABLE"}


def _describe_token(token: Token) -> str:
    if token.type == "$END":
        return "end of input"
    text = token.value
    return f"'{text}'" if len(text) < 40 else f"'{text[:37]}…'"


def _describe_expected(expected: set[str]) -> str:
    if _EXPRESSION_START <= expected or {"NUMBER", "NAME", "LPAR"} <= expected:
        return "an expression"
    names = []
    for name in sorted(expected):
        if name in _FRIENDLY:
            names.append(_FRIENDLY[name])
        elif name.isupper() and name.isalpha():
            names.append(name.lower())
        else:
            names.append(name.lower())
    names = sorted(set(names))
    if len(names) > 6:
        names = names[:6] + ["…"]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _parse_error(text: str, exc: UnexpectedInput) -> QueryParseError:
    offset = getattr(exc, "pos_in_stream", None) or 0
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        if token.type == "$END":
            span = Span.at(text, len(text.rstrip()), 1) if text.strip() else Span.at(text, 0, 0)
            message = f"the statement ends too early: expected {_describe_expected(set(exc.expected))}"
        else:
            span = _token_span(token)
            expected = set(exc.expected)
            message = f"unexpected {_describe_token(token)}: expected {_describe_expected(expected)}"
            starts = token.type in _STATEMENT_START or (token.type == "NAME" and token.value.upper() in _STATEMENT_START)
            if "SEMICOLON" in expected and starts:
                message = f"missing ';' before {_describe_token(token)}"
            elif token.type == "SEMICOLON":
                message = f"the statement ends too early at ';': expected {_describe_expected(expected)}"
            elif re.match(r"(in\s+\S+\s+)?(waves?|percent)\b", text[token.start_pos:], re.I):  # `in 3 waves`
                message += " (rollout options follow the selection: over 3 waves abort above 10 percent)"
    elif isinstance(exc, UnexpectedCharacters):
        span = Span.at(text, offset, 1)
        char = text[offset] if offset < len(text) else ""
        if char in "'\"":
            message = "a string is not closed: add the closing quote"
        elif char == "|":
            message = "a time literal is not closed: write it as |2024-03-07T23:10:17Z|"
        else:
            message = f"unexpected character {char!r}"
    else:  # pragma: no cover - other UnexpectedInput kinds do not occur with LALR
        span = Span.at(text, offset, 1)
        message = str(exc).splitlines()[0]
    return QueryParseError(message, span, text)


_STATEMENT_START = {"SELECT", "CREATE", "SET", "DELETE", "DROP", "INSERT", "EXPLAIN", "VALIDATE",
                    "DEPLOY", "ROLLBACK", "UNDEPLOY"}


# ------------------------------------------------------------------------------ entry points
_DIRECTIVE = re.compile(r"^[ \t]*(?://|--)[ \t]*([A-Za-z_]+[ \t]*:.*?)[ \t]*$", re.MULTILINE)


MAX_NESTING = 64   # brackets inside brackets: far beyond what a person writes
MAX_DEPTH = 200    # levels of the tree (a sum of 200 terms): the binder and printer recurse this deep,
                   # which fits Python's default recursion limit with room for the caller's own frames


def _check_nesting(text: str) -> None:
    """Refuse absurdly deep nesting before it reaches the recursive parts (cheap: one scan)."""
    depth = 0
    quote = None
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise QueryParseError(f"the statement is nested more than {MAX_NESTING} brackets deep",
                                      Span.at(text, i, 1), text)
        elif ch in ")]}":
            depth -= 1
        elif ch == "-" and text.startswith("--", i) or ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif ch == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        i += 1


def _check_depth(text: str, statement: A.Statement) -> None:
    """The tree's depth, measured without recursion; too deep is a parse error at that node."""
    stack = [(statement, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise QueryParseError(f"the statement is nested more than {MAX_DEPTH} levels deep (split a long "
                                  "expression into functions)", node.span or statement.span, text)
        for child in node.children():
            stack.append((child, depth + 1))


def parse(text: str) -> A.Script:
    """Parse a script of `;`-separated statements into a `Script` (the last `;` may be left out)."""
    _check_nesting(text)
    try:
        statements = _fast_parse().parse(text)
        statements = tuple(parser().parse(text) if statements is None else statements)
    except UnexpectedInput as exc:
        raise _parse_error(text, exc) from None
    except QueryError as exc:
        exc.source = text
        raise
    except RecursionError:
        raise QueryParseError("the statement is nested too deeply", Span.at(text, 0, len(text)), text) from None
    for statement in statements:
        _check_depth(text, statement)
    return A.Script(_attach_directives(text, statements), span=Span.at(text, 0, len(text)))


def _attach_directives(text: str, statements: tuple) -> tuple:
    """Keep comment directives (`//plot: Line plot`) with the statement that follows them."""
    if "//" not in text and "--" not in text:
        return statements
    out, previous_end = [], 0
    for statement in statements:
        start = statement.span.start if statement.span else previous_end
        gap = text[previous_end:start]
        directives = tuple(m.group(1) for m in _DIRECTIVE.finditer(gap))
        out.append(replace(statement, directives=directives) if directives else statement)
        previous_end = statement.span.end if statement.span else start
    return tuple(out)


def parse_one(text: str) -> A.Statement:
    """Parse exactly one statement."""
    script = parse(text)
    if len(script) != 1:
        raise QueryParseError(f"expected one statement, found {len(script)}",
                              script[1].span if len(script) > 1 else Span.at(text, 0, len(text)), text)
    return script[0]


def parse_expression(text: str) -> A.Expr:
    """Parse one expression (as a bare expression statement)."""
    statement = parse_one(text)
    if not isinstance(statement, A.ExprStatement):
        raise QueryParseError("expected an expression", statement.span, text)
    return statement.expr


def statement_texts(text: str) -> list[tuple[A.Statement, str]]:
    """Each statement of a script with its own source text."""
    script = parse(text)
    return [(s, text[s.span.start:s.span.end] if s.span else s.sql()) for s in script]
