"""The parser and printer: LANGUAGE.md's examples, round trips over every fixture, a handler for
every grammar rule, precedence, case, comments and directives, OSQL statements, parse errors."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streamql
from streamql import ast as A
from streamql.errors import QueryParseError
from streamql.printer import to_source
from streamql.syntax import ToAst, parse, parse_expression, parse_one, parser

from core_support import FIXTURES, fixture_files, load_fixture

REPO = Path(__file__).resolve().parents[2]
# the language reference in this repository, and the design document when it is beside the checkout
LANGUAGE_DOCS = [REPO / "docs" / "language.md"] + [p for p in [REPO.parent / "shared" / "LANGUAGE.md"] if p.exists()]


def fixture_statements(include_errors: bool = False):
    """(where, text) of every statement in every fixture file that is meant to parse."""
    out = []
    for path in fixture_files():
        for case in load_fixture(path):
            if case.expects_parse_error and not include_errors:
                continue
            out.append((case.where, case.text))
    return out


FIXTURE_STATEMENTS = fixture_statements()


# ------------------------------------------------------------------------- LANGUAGE.md
def test_language_examples_parse():
    """tests/fixtures/parse/language_examples.sql holds every statement of LANGUAGE.md."""
    cases = load_fixture(FIXTURES / "parse" / "language_examples.sql")
    count = sum(len(parse(case.text)) for case in cases)
    assert count >= 50


def _language_md_snippets(text: str) -> list[str]:
    """Statement blocks of LANGUAGE.md's code fences, and inline `…;` examples."""
    snippets = []
    for block in re.findall(r"```\n(.*?)```", text, re.S):
        if re.match(r"\s*(select|create|set|delete|drop|insert|explain|validate|deploy|rollback|undeploy)\b",
                    block, re.I) and "[" + "distinct]" not in block:
            snippets.append(block.replace("explain select …;", "explain select 1;"))
    for inline in re.findall(r"`([^`\n]+;)`", text):
        words = inline.split()
        if "…" not in inline and (len(words) < 2 or "<" not in words[1]):   # `f(x);` is one word
            snippets.append(inline)
    return snippets


@pytest.mark.parametrize("document", LANGUAGE_DOCS, ids=lambda p: p.name)
def test_language_md_code_parses_as_written(document):
    """Never skipped: the repository's language.md is always there (it once read only the design
    document beside the checkout, so CI skipped it)."""
    snippets = _language_md_snippets(document.read_text(encoding="utf-8"))
    assert len(snippets) >= 6
    for snippet in snippets:
        assert len(parse(snippet)) >= 1, snippet


# ------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("where,text", FIXTURE_STATEMENTS, ids=[w for w, _ in FIXTURE_STATEMENTS])
def test_round_trip_every_fixture(where, text):
    script = parse(text)
    printed = to_source(script)
    again = parse(printed)
    assert again == script, f"{where}: {printed}"
    assert to_source(again) == printed  # printing is stable
    for statement in script:
        assert parse_one(statement.sql()) == statement


def test_round_trip_covers_every_statement_node():
    seen = set()
    for _, text in FIXTURE_STATEMENTS:
        for statement in parse(text):
            seen |= {type(n).__name__ for n in statement.walk()}
    node_classes = {c.__name__ for c in vars(A).values()
                    if isinstance(c, type) and issubclass(c, A.Node) and c not in (A.Node, A.Expr, A.Statement)}
    missing = node_classes - seen - {"Script"}
    assert not missing, f"no fixture statement has {sorted(missing)}"


@pytest.mark.parametrize("text", [
    "-(-x)", "-(-(-x))", "- -x", "not not a", "(a = b) = c", "a - (b - c)", "a ^ b ^ c", "(a ^ b) ^ c",
    "-a ^ b", "(-a) ^ b", "a .^ -b", "2 ^ -3 ^ 2", "x in (select 1)", "f(x)@e", "(a + b)@e", "v[1][2:3]",
    "r.a.b", "(f(x)@e)[1]", "not a in b", "cast(x as Vector of Real)", "case when a then b end",
    "{\"a\": 1}['a']", "a * (b + c)", "(a + b) * c", "-(a + b)", "-(a * b)", "a - -b", "a / (b * c)",
    "(a or b) and c", "not (a and b)", "(not a) = b", "x not between a and b", "'it''s'", "1e+16",
])
def test_round_trip_tricky_expressions(text):
    tree = parse_expression(text)
    printed = tree.sql()
    assert parse_expression(printed) == tree, printed


# Random expression text over a small grammar, parenthesised at random: printing must keep the
# meaning (checked by evaluating constant arithmetic on the engine before and after printing).
_atoms = st.sampled_from(["1", "2", "3", "0.5", "x", "y"])


def _combine(children):
    unary = st.builds(lambda e: f"- {e}", children) | st.builds(lambda e: f"-({e})", children)
    binary = st.builds(lambda a, op, b: f"{a} {op} {b}", children,
                       st.sampled_from(["+", "-", "*", "/", "^", "%"]), children)
    return unary | binary | st.builds(lambda e: f"({e})", children)


EXPRESSIONS = st.recursive(_atoms, _combine, max_leaves=8)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(EXPRESSIONS)
def test_printing_keeps_the_tree(text):
    tree = parse_expression(text)
    assert parse_expression(tree.sql()) == tree


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(EXPRESSIONS)
def test_printing_keeps_the_value(text):
    engine = streamql.Engine()
    query = "select {} from Integer x, Real y where x = 3 and y = 1.5;"
    tree = parse_expression(text)
    try:
        before = list(engine.query(query.format(text)))
    except streamql.QueryError as exc:
        with pytest.raises(streamql.QueryError) as again:
            list(engine.query(query.format(tree.sql())))
        assert again.value.kind == exc.kind
        return
    after = list(engine.query(query.format(tree.sql())))
    assert repr(after) == repr(before)


# ------------------------------------------------------------------------- grammar coverage
def test_every_grammar_rule_has_a_handler():
    """A rule (or alias) that is neither inlined (`_rule`) nor a `?rule` collapsing to its one
    child must have a method of ToAst, or parsing it would leave a raw Lark tree."""
    missing = set()
    for rule in parser().rules:
        origin = rule.origin.name
        origin = origin.value if hasattr(origin, "value") else str(origin)
        if origin.startswith("_"):
            continue
        if rule.alias is None and rule.options.expand1 and len(rule.expansion) == 1:
            continue
        name = rule.alias or origin
        if not callable(getattr(ToAst, name, None)):
            missing.add(name)
    assert not missing, f"grammar rules without a ToAst method: {sorted(missing)}"


def test_every_handler_has_a_rule():
    names = set()
    for rule in parser().rules:
        origin = rule.origin.name
        names.add(origin.value if hasattr(origin, "value") else str(origin))
        if rule.alias:
            names.add(rule.alias)
    handlers = {n for n, v in vars(ToAst).items() if callable(v) and not n.startswith("_")}
    assert handlers - names == set(), f"ToAst methods for no rule: {sorted(handlers - names)}"


def test_no_lark_tree_escapes():
    from lark import Token, Tree
    for _, text in FIXTURE_STATEMENTS:
        for statement in parse(text):
            for node in statement.walk():
                for value in vars(node).values():
                    assert not isinstance(value, (Tree, Token)), (text, node)


# ------------------------------------------------------------------------- precedence
def test_unary_minus_binds_looser_than_power():
    assert parse_expression("-2^2") == A.Negate(A.BinaryOp("^", A.Literal(2), A.Literal(2)))
    engine = streamql.Engine()
    assert list(engine.query("select -2^2, 2^3^2, (-2)^2, 2^-1;")) == [(-4.0, 512.0, 4.0, 0.5)]


def test_power_is_right_associative():
    assert parse_expression("2^3^2") == A.BinaryOp("^", A.Literal(2), A.BinaryOp("^", A.Literal(3), A.Literal(2)))


def test_postfix_binds_tighter_than_comparison():
    tree = parse_expression("f(x)@e < -20")
    assert tree == A.Compare("<", A.AtEdge(A.Call("f", (A.Variable("x"),)), A.Variable("e")),
                             A.Negate(A.Literal(20)))


def test_at_edge_ships_only_its_postfix_operand():
    assert parse_expression("a + b@e") == A.BinaryOp("+", A.Variable("a"), A.AtEdge(A.Variable("b"), A.Variable("e")))
    assert parse_expression("(a + b)@e") == A.AtEdge(A.BinaryOp("+", A.Variable("a"), A.Variable("b")), A.Variable("e"))


def test_a_dot_needs_digits_after_it():
    assert parse_expression("2.*v") == A.BinaryOp(".*", A.Literal(2), A.Variable("v"))
    assert parse_expression("2.5*v") == A.BinaryOp("*", A.Literal(2.5), A.Variable("v"))
    assert parse_expression(".01") == A.Literal(0.01)
    assert parse_expression("1e-3") == A.Literal(0.001)
    assert parse_expression("v./2") == A.BinaryOp("./", A.Variable("v"), A.Literal(2))


@pytest.mark.parametrize("text,expected", [
    ("a + b * c", "a + (b * c)"),
    ("a * b + c", "(a * b) + c"),
    ("a - b - c", "(a - b) - c"),
    ("a / b / c", "(a / b) / c"),
    ("-a * b", "(-a) * b"),
    ("a * -b ^ 2", "a * (-(b ^ 2))"),
    ("a .* b + c", "(a .* b) + c"),
    ("a + b = c", "(a + b) = c"),
    ("a = b and c = d", "(a = b) and (c = d)"),
    ("a or b and c", "a or (b and c)"),
    ("not a and b", "(not a) and b"),
    ("not a = b", "not (a = b)"),
    ("a + b in c", "(a + b) in c"),
    ("a + 1 between b and c + 1", "(a + 1) between b and (c + 1)"),
    ("a + 'x' like b", "(a + 'x') like b"),
    ("a + b is null", "(a + b) is null"),
    ("v[1] ^ 2", "(v[1]) ^ 2"),
    ("-v[1]", "-(v[1])"),
    ("r.a + 1", "(r.a) + 1"),
])
def test_precedence_table(text, expected):
    assert parse_expression(text) == parse_expression(expected)


# ------------------------------------------------------------------------- lexical
def test_keywords_are_case_insensitive():
    lower = parse("select distinct stream of x as y from Integer x where x in iota(1, 2) and not x is null "
                  "group by x having count(*) > 1 order by x desc limit 3;")
    upper = parse("SELECT DISTINCT STREAM OF x AS y FROM Integer x WHERE x IN iota(1, 2) AND NOT x IS NULL "
                  "GROUP BY x HAVING count(*) > 1 ORDER BY x DESC LIMIT 3;")
    mixed = parse("Select Distinct Stream Of x As y From Integer x Where x In iota(1, 2) And Not x Is Null "
                  "Group By x Having count(*) > 1 Order By x Desc Limit 3;")
    assert lower == upper == mixed
    assert parse("CREATE TYPE T UNDER U PROPERTIES (a Integer KEY);") == parse("create type T under U properties (a Integer key);")
    assert parse_expression("TRUE") == A.Literal(True) and parse_expression("Null") == A.Literal(None)


def test_names_are_case_insensitive_when_run():
    engine = streamql.Engine()
    assert list(engine.query("SELECT SQRT(X) FROM INTEGER X WHERE X IN IOTA(4, 4);")) == [2.0]
    assert list(engine.query("select Stream Of x from real x where x IN siota(1, 2);")) == [1, 2]


def test_comments_are_ignored():
    plain = parse("select 1 + 2 from Integer x where x = 1;")
    commented = parse("-- leading\nselect /* in the middle */ 1 + // to the end\n 2 from Integer x "
                      "/* several\nlines */ where x = 1; -- trailing")
    assert plain == commented


def test_directives_are_kept_outside_equality():
    script = parse("//plot: Line plot\nselect 1;\n-- not a directive\nselect 2;\n// chart: bar \nselect 3")
    assert script[0].directives == ("plot: Line plot",)
    assert script[1].directives == ()
    assert script[2].directives == ("chart: bar",)
    assert script == parse("select 1; select 2; select 3;")
    assert script[0] == parse_one("select 1;")


def test_the_last_semicolon_may_be_left_out():
    assert parse("select 1; select 2") == parse("select 1; select 2;")
    assert len(parse("")) == 0 and len(parse("   -- nothing\n")) == 0


def test_literals():
    assert parse_expression("'it''s'") == A.Literal("it's")
    assert parse_expression('"say ""hi"""') == A.Literal('say "hi"')
    assert parse_expression("#'mean'") == A.Literal(streamql.FunctionRef("mean"))
    assert parse_expression(":limits") == A.SessionVariable("limits")
    assert parse_expression("|2024-03-07T23:10:17.9Z|").value.iso() == "2024-03-07T23:10:17.9Z"
    assert parse_expression("[1, 2.5]") == A.VectorLiteral((A.Literal(1), A.Literal(2.5)))
    assert parse_expression('{"k": 1}') == A.RecordLiteral((("k", A.Literal(1)),))
    assert parse_expression("csv:file_stream('a')") == A.Call("csv:file_stream", (A.Literal("a"),))
    assert A.Literal(1) != A.Literal(1.0) and A.Literal(True) != A.Literal(1)


def test_spans_locate_nodes():
    text = "select x + 1\nfrom Integer x\nwhere x in iota(1, 3);"
    select = parse_one(text)
    where = select.where
    assert (where.span.line, where.span.column) == (3, 7)
    assert text[where.span.start:where.span.end] == "x in iota(1, 3)"
    item = select.items[0].expr
    assert text[item.span.start:item.span.end] == "x + 1"


# ------------------------------------------------------------------------- OSQL
@pytest.mark.parametrize("text", [
    "select Stream of x from Real x where x in heartbeat(0.5) and mod(x,1) < 0.1",
    "select Vector of i from Integer i where i in iota(1,5)",
    "create function ctof(Real c) -> Real as c * 9 / 5 + 32;",
    "select winagg(siota(1,10), 3, 2);",
    "sqrt(2)",
    "set :v = [1,2,3];",
    "select Stream of rms(w) from Vector of Number w where w in winagg(signal_stream('s'),256,128)",
    "create type Person; create function name(Person p) -> Charstring as stored; "
    "create Person (name) instances ('Bill'), ('Sally')",
])
def test_osql_statements_parse_unchanged(text):
    assert len(parse(text)) >= 1


def test_osql_heartbeat_query_runs_without_a_final_semicolon():
    from streamql.clock import FakeClock
    engine = streamql.Engine(clock=FakeClock())
    rows = list(engine.query("select Stream of x from Real x where x in heartbeat(0.5) and mod(x,1) < 0.1 limit 3"))
    assert rows == [1.0, 2.0, 3.0]


# ------------------------------------------------------------------------- errors
@pytest.mark.parametrize("text,line,column", [
    ("select 1 +;", 1, 11),
    ("select 1;\nselect (1 + ;", 2, 13),
    ("select 1;\n\n  select from Integer x;", 3, 15),  # `from` is a name here; `Integer` cannot follow it
    ("select 'abc;", 1, 8),
    ("select\n  x\n  from;", 3, 7),
    ("select 1 select 2;", 1, 10),
    ("select |2024-99-99|;", 1, 8),
    ("select 1 $ 2;", 1, 10),
])
def test_parse_errors_carry_line_column_and_caret(text, line, column):
    with pytest.raises(QueryParseError) as info:
        parse(text)
    error = info.value
    assert error.kind == "ParseError"
    assert (error.line, error.column) == (line, column), error
    excerpt = error.excerpt
    lines = excerpt.splitlines()
    assert lines[-1].strip().startswith("|") and "^" in lines[-1]
    source_line = text.splitlines()[line - 1]
    assert source_line in lines[-2]
    caret_column = lines[-1].index("^") - lines[-1].index("|") - 1
    assert caret_column == column, excerpt
    assert f"line {line}, column {column}" in str(error)


@pytest.mark.parametrize("where", [3, 200, 9_000, 19_990])
def test_an_error_in_a_long_line_shows_the_part_around_its_caret(where):
    """A 20,000-character one-line statement (an `in` list) printed its whole line and a caret
    line as long; the excerpt now shows EXCERPT_WIDTH characters around the caret."""
    from streamql.errors import EXCERPT_WIDTH
    items = ["1"] * 10_000
    items[where // 2] = "1 2"                   # a number where a comma belongs
    text = "select x from Integer x where x in (" + ",".join(items) + ");"
    with pytest.raises(QueryParseError) as info:
        parse(text)
    top, carets = info.value.excerpt.splitlines()
    shown = top.split(" | ", 1)[1]
    assert len(shown) <= EXCERPT_WIDTH + 2 and len(carets) <= len(top)
    column = info.value.column
    assert text[column - 1] == "2" and shown[carets.index("^") - top.index("|") - 2] == "2"
    assert shown.startswith("…") == (column > EXCERPT_WIDTH // 2 + 1)


@pytest.mark.parametrize("text,bad", [
    ("select from Integer x;", "Integer"),        # not `from In teger`
    ("select x andy;", "andy"),                   # not `x and y`
    ("select 1 isnull;", "isnull"),               # not `1 is null`
    ("select x from Integer x where x in iota(1, 3) orderby x;", "orderby"),
    ("select 1 asx;", "asx"),                     # not `1 as x`
])
def test_keywords_match_whole_words_only(text, bad):
    with pytest.raises(QueryParseError) as info:
        parse(text)
    assert info.value.message.startswith(f"unexpected '{bad}'"), info.value.message
    assert text[info.value.span.start:info.value.span.end] == bad


def test_soft_keywords_are_names_where_a_keyword_cannot_be():
    tree = parse_one("select key(e), version from Integer e, Integer version where e = 1 and version = 2;")
    assert tree.items[0].expr == A.Call("key", (A.Variable("e"),))
    assert tree.items[1].expr == A.Variable("version")
    assert parse_expression("stream(v)") == A.Call("stream", (A.Variable("v"),))


def test_parse_error_messages_are_for_people():
    with pytest.raises(QueryParseError) as info:
        parse("select 1 +;")
    assert "expected an expression" in info.value.message
    with pytest.raises(QueryParseError) as info:
        parse("select 1 select 2")
    assert "missing ';'" in info.value.message
    with pytest.raises(QueryParseError) as info:
        parse("select (1 + 2")
    assert "ends too early" in info.value.message
    assert "__ANON" not in info.value.message and "$END" not in info.value.message


def test_query_raises_at_once_on_a_parse_error():
    engine = streamql.Engine()
    with pytest.raises(QueryParseError):
        engine.query("select (;")


def test_parse_one_wants_one_statement():
    with pytest.raises(QueryParseError) as info:
        parse_one("select 1; select 2;")
    assert info.value.line == 1 and info.value.column == 11


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.datetimes(min_value=__import__("datetime").datetime(1000, 1, 2), max_value=__import__("datetime").datetime(9999, 12, 30)))
def test_time_literals_print_back_exactly(moment):
    text = "|" + moment.isoformat() + "Z|"
    tree = parse_expression(text)
    printed = tree.sql()
    assert parse_expression(printed) == tree, (text, printed)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False, min_value=0), st.integers(0, 2 ** 70),
                 st.text(max_size=20)))
def test_literals_print_back_exactly(value):
    from streamql.printer import literal_source
    tree = parse_expression(literal_source(value))
    assert isinstance(tree, A.Literal) and type(tree.value) is type(value) and tree.value == value


def test_times_before_the_year_1000_print_back():
    tree = parse_expression("|0999-01-01T00:00:00Z|")
    assert parse_expression(tree.sql()) == tree, tree.sql()


# ------------------------------------------------------------------------- rollouts
def test_rollout_options_parse_in_any_order_into_one_node():
    statement = parse_one("deploy model 'vib' version '1.2.0' to Edge e where region(e) = 'US' "
                          "rollback on abort wave timeout 2 minutes abort above 12.5 percent over 3 waves;")
    assert statement.rollout == A.Rollout(waves=3, abort_above=12.5, wave_timeout=120, rollback_on_abort=True)
    assert statement.selection.where == parse_expression("region(e) = 'US'")
    sizes = parse_one("deploy model 'vib' to Edge e over waves of 1, 10 percent, 25;").rollout
    assert sizes == A.Rollout(wave_sizes=((1, False), (10, True), (25, False)))
    assert parse_one("deploy model 'vib' to Edge e;").rollout is None
    undeploy = parse_one("undeploy model 'vib' from Edge e over 2 waves;")
    assert undeploy.rollout == A.Rollout(waves=2) and undeploy.selection.where is None
    rollback = parse_one("rollback model 'vib' to version '1.0.0' on Edge e wave timeout 30 seconds;")
    assert rollback.rollout == A.Rollout(wave_timeout=30) and rollback.version == "1.0.0"


def test_rollouts_print_back_to_the_same_tree():
    for text in ("deploy model 'vib' to Edge e where kind(e) = 'dumper' over waves of 5 percent abort above 0 percent",
                 "deploy model 'vib' version '2.0.0' to Edge e over 3 waves wave timeout 90.5 seconds rollback on abort",
                 "explain undeploy model 'vib' from Edge e where x in y over 4 waves"):
        statement = parse_one(text + ";")
        assert statement.sql() == text
        assert parse_one(statement.sql()) == statement


@pytest.mark.parametrize("text,message", [
    ("over 0 waves", "0 is out of range here: a whole number from 1 up"),
    ("over 2.5 waves", "a whole number"),
    ("over waves of 0", "a whole number from 1 up"),
    ("over waves of 150 percent", "a number from 1 to 100"),
    ("abort above 101 percent", "a number from 0 to 100"),
    ("wave timeout 0 seconds", "out of range"),
    ("over 2 waves over waves of 1", "given once (and the waves one way)"),
    ("abort above 1 percent abort above 2 percent", "given once"),
    ("where region(e) = 'US' in 3 waves", "rollout options follow the selection: over 3 waves"),
])
def test_bad_rollout_options_are_parse_errors_at_the_option(text, message):
    with pytest.raises(QueryParseError, match=re.escape(message)):
        parse_one(f"deploy model 'vib' to Edge e {text};")
