"""The parser's own LALR loop and contextual lexer (`syntax.grammar._FastParse`, `syntax.grammar._StateLexer`)
against lark's: for every statement of the fixtures, and for thousands of mutated and random
ones, both give the same tree with the same spans, or fail with the same error at the same
place (the fast loop hands text it cannot parse to lark, whose error is the one raised)."""
from __future__ import annotations

import random
from functools import lru_cache

import pytest
from lark import Lark
from lark.exceptions import UnexpectedInput

from streamql import ast as A
from streamql.errors import QueryParseError
from streamql.syntax import ToAst, _ROUGH_TOKEN, grammar_text, parse_one, parser
from streamql.syntax.grammar import _fast_parse, _WholeWords

from test_core_bad_input import KINDS, _corpus, make_statement


@lru_cache(maxsize=1)
def lark_reference() -> Lark:
    return Lark(grammar_text(), parser="lalr", lexer="contextual", strict=True, maybe_placeholders=True,
                transformer=ToAst(), cache=True, postlex=_WholeWords())


class Ours:
    """How `syntax.parse` parses: the fast loop, and lark where it gives up."""

    def __init__(self):
        self.fast = 0

    def parse(self, text: str):
        statements = _fast_parse().parse(text)
        if statements is not None:
            self.fast += 1
            return statements
        return parser().parse(text)


def outcome(lark, text: str):
    """The statements with every node's span, or the error's kind and position."""
    try:
        statements = lark.parse(text)
    except UnexpectedInput as exc:
        token = getattr(exc, "token", None)
        return ("error", type(exc).__name__, exc.line, exc.column, str(token) if token is not None else None,
                getattr(token, "type", None), sorted(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or []))
    except Exception as exc:  # noqa: BLE001 - the transformer's own errors (numbers out of range, …)
        return ("raised", type(exc).__name__, str(exc))
    return ("parsed", [described for statement in statements for described in _nodes(statement)])


def _nodes(root: A.Node) -> list:
    """Each node as (class, span, its values that are not nodes), without recursion (trees of
    mutated statements can be deeper than Python's recursion limit)."""
    out, stack = [], [root]
    while stack:
        node = stack.pop()
        values = tuple(repr(v) for k, v in vars(node).items()
                       if k != "span" and not isinstance(v, (A.Node, tuple)))
        out.append((type(node).__name__, node.span, values))
        stack.extend(node.children())
    return out


def assert_same(text: str) -> None:
    ours = Ours()
    mine, theirs = outcome(ours, text), outcome(lark_reference(), text)
    assert mine == theirs, text
    if theirs[0] == "parsed":
        assert ours.fast, f"the fast loop gave up on valid text: {text!r}"


def test_the_fixture_corpus_lexes_as_lark_does():
    corpus = _corpus()
    assert len(corpus) > 100
    for text in corpus:
        assert_same(text)


def test_lines_columns_and_comments_as_lark_counts_them():
    assert_same("select x\n  from Integer x -- a comment\n  where x in iota(1, 3) /* and\n more */ and x > 1;")
    assert_same("select 'a\nb', {'k':x} from Integer x where x in iota(1,2);\n\n  select :v;")
    assert_same("select |2024-01-01T00:00:00Z|, #'sqrt', csv:file_stream('f.csv') ;")
    assert_same("select x from Integer x where x in iota(1, 3) and x ! 2;")       # unexpected character
    assert_same("select from where;\nselect 1 +;")                                 # unexpected tokens
    assert_same("SELECT Stream OF x FROM Integer x WHERE x IN siota(1, 3) LIMIT 2;")


@pytest.mark.parametrize("kind", sorted(set(KINDS)))
def test_random_and_mutated_statements_lex_as_lark_does(kind):
    rnd = random.Random(kind)
    for _ in range(600):
        assert_same(make_statement(kind, rnd.randrange(2 ** 32)))


def test_a_long_string_literal_is_lexed_in_little_memory():
    """A 64 KiB string literal (the longest statement the federation takes) lexed with a regex that
    repeats per escaped quote, not per character: no megabytes of regex backtracking state."""
    import tracemalloc

    from streamql.syntax import parse_one
    parse_one("select 'warm';")
    text = "select '" + "x" * 65_000 + "''" + "y" * 100 + "';"
    tracemalloc.start()
    try:
        statement = parse_one(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert statement.items[0].expr.value == "x" * 65_000 + "'" + "y" * 100
    assert peak < 4 << 20, peak


def test_the_token_count_before_parsing_is_the_lexers_within_a_few():
    """`check_token_count` counts in the regex engine what the lexer would make tokens of: never
    fewer (a cap is not dodged), at most a few more (a comment is one token to it)."""
    texts = _corpus()
    rnd = random.Random("tokens")
    texts += [make_statement(kind, rnd.randrange(2 ** 32)) for kind in sorted(set(KINDS)) for _ in range(100)]
    counted = 0
    for text in texts:
        try:
            real = sum(1 for _ in parser().lex(text))
        except UnexpectedInput:
            continue
        rough = len(_ROUGH_TOKEN.findall(text))
        assert real <= rough <= real + 3 + real // 10, (real, rough, text)
        counted += 1
    assert counted > 1000


def test_a_statement_over_the_token_cap_is_refused_at_its_first_token_past_it():
    statement = "select " + ", ".join(f"'{i}'" for i in range(3000)) + ";"    # 1 + 5,999 + 1 tokens
    assert len(parse_one(statement, max_tokens=6001).items) == 3000
    with pytest.raises(QueryParseError) as caught:
        parse_one(statement, max_tokens=6000)
    assert caught.value.span.start == len(statement) - 1 and "more than 6000 tokens" in caught.value.message
    with pytest.raises(QueryParseError) as caught:      # a comment is cheap: one token, however long
        parse_one("select 1 /*" + "x " * 10_000 + "*/ + 2;", max_tokens=5)
    assert caught.value.span.start == len("select 1 /*" + "x " * 10_000 + "*/ + 2")
    assert parse_one("select 1 /*" + "x " * 10_000 + "*/ + 2;", max_tokens=6) is not None
