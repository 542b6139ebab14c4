"""The tolerant scanner: terminals from the grammar, statement splitting, highlighting."""
from __future__ import annotations

import pytest

from streamql.shell.highlight import StreamQLLexer, highlight_fragments
from streamql.shell.lexer import categorize, is_complete, keyword_set, scan, split
from streamql.syntax import keywords, parser
from prompt_toolkit.document import Document


def kinds(text):
    return [(t.type, t.text) for t in scan(text) if not t.trivia]


def test_keywords_come_from_the_grammar():
    assert keyword_set() == set(keywords())
    for word in keywords():
        assert kinds(word.upper()) == [(_terminal(word), word.upper())]


def _terminal(word):
    return next(t.name for t in parser().terminals if t.pattern.value == word)


def test_tokens_match_the_parsers_lexer():
    text = "select stream of csv:file_stream('a.csv'), #'mean', :lim, |2024-03-07T23:10:17Z|, 2.*v, 1e-3 " \
           "from Edge e where f(x)@e >= .5 and r['k'] != 'it''s'; -- done"
    ours = [(t.type, t.text) for t in scan(text) if not t.trivia]
    theirs = [(t.type, t.value) for t in parser().lex(text)]
    assert ours == theirs


def test_scanning_never_fails_on_unfinished_input():
    assert kinds("select 'abc;\ndef") == [("SELECT", "select"), ("UNCLOSED_STRING", "'abc;\ndef")]
    assert kinds("select 1 /* open; ")[-1] == ("UNCLOSED_COMMENT", "/* open; ")
    assert kinds("select |2024")[-1] == ("UNCLOSED_TIME", "|2024")
    assert kinds("select ?")[-1] == ("ERROR", "?")
    assert "".join(t.text for t in scan("a 'b\n c")) == "a 'b\n c"


@pytest.mark.parametrize("text, complete", [
    ("select 1;", True),
    ("select 1", False),
    ("select 'a;b'", False),
    ("select 'a;b';", True),
    ("select 1 -- the end;", False),
    ("select 1 /* ; */", False),
    ("select 1 /* ;", False),
    ("select 1; select 2", False),
    ("select 1; select 2;  -- trailing comment", True),
    ("//plot: Line plot", False),
    ("\\output csv", True),
    ("   ", False),
])
def test_is_complete(text, complete):
    assert is_complete(text) is complete


def test_split_keeps_comments_with_their_statement_and_finds_meta_commands():
    text = "select 1;\n//plot: Line plot\nselect 2;\n\\output csv\nselect 'x;y'; select 3"
    pieces = split(text)
    assert [(p.kind, p.text.strip(), p.complete) for p in pieces] == [
        ("statement", "select 1;", True),
        ("statement", "//plot: Line plot\nselect 2;", True),
        ("meta", "\\output csv", True),
        ("statement", "select 'x;y';", True),
        ("statement", "select 3", False),
    ]
    assert all(text[p.start:p.end].strip() == p.text.strip() for p in pieces)


def test_categories_for_highlighting():
    text = "//plot: Line plot\nselect sqrt(x)@e, 'a', 3.5, true, |2024-01-01|, :v from Real x; /* c */"
    got = {(category, token.text) for category, token in categorize(list(scan(text)))}
    for expected in [("directive", "//plot: Line plot"), ("keyword", "select"), ("function", "sqrt"),
                     ("at", "@"), ("name", "e"), ("string", "'a'"), ("number", "3.5"), ("constant", "true"),
                     ("time", "|2024-01-01|"), ("variable", ":v"), ("type", "Real"), ("comment", "/* c */")]:
        assert expected in got


def test_prompt_toolkit_lexer_splits_multiline_tokens_per_line():
    document = Document("select 'a\nb' -- x\n from T;")
    get_line = StreamQLLexer().lex_document(document)
    assert get_line(0) == [("class:keyword", "select"), ("", " "), ("class:string", "'a")]
    assert get_line(1) == [("class:string", "b'"), ("", " "), ("class:comment", "-- x")]
    assert ("class:keyword", "from") in get_line(2)
    assert highlight_fragments("\\output csv") == [[("class:meta", "\\output csv")]]
