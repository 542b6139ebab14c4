"""Syntax highlighting for prompt_toolkit from the grammar's terminals (see `lexer`)."""
from __future__ import annotations

from prompt_toolkit.document import Document
from prompt_toolkit.lexers import Lexer
from prompt_toolkit.styles import Style

from .lexer import categorize, scan

STYLE = Style.from_dict({
    "keyword": "bold ansiblue",
    "constant": "ansimagenta",
    "function": "ansicyan",
    "type": "ansigreen",
    "number": "ansiyellow",
    "string": "ansigreen",
    "time": "ansiyellow",
    "funcref": "ansicyan",
    "variable": "ansimagenta",
    "comment": "italic ansibrightblack",
    "directive": "bold ansibrightmagenta",
    "at": "bold ansired",
    "operator": "",
    "punctuation": "",
    "name": "",
    "error": "bg:ansired ansiwhite",
    "meta": "bold ansimagenta",
    "prompt": "bold",
    "continuation": "ansibrightblack",
    # completion menu
    "completion-menu.meta.completion": "bg:ansibrightblack ansiwhite",
})


def highlight_fragments(text: str) -> list[list[tuple[str, str]]]:
    """Style fragments per line of `text`: [[('class:keyword', 'select'), ('', ' '), …], …]."""
    lines: list[list[tuple[str, str]]] = [[]]
    if text.lstrip().startswith("\\"):
        for i, line in enumerate(text.split("\n")):
            if i:
                lines.append([])
            lines[-1].append(("class:meta", line))
        return lines
    for category, token in categorize(list(scan(text))):
        style = f"class:{category}" if category else ""
        parts = token.text.split("\n")
        for i, part in enumerate(parts):
            if i:
                lines.append([])
            if part:
                lines[-1].append((style, part))
    return lines


class StreamQLLexer(Lexer):
    """prompt_toolkit lexer: scans the whole buffer once per change, serves it line by line."""

    def lex_document(self, document: Document):
        try:
            lines = highlight_fragments(document.text)
        except Exception:  # noqa: BLE001 - plain text rather than a broken prompt
            lines = [[("", line)] for line in document.text.split("\n")]

        def get_line(number: int):
            return lines[number] if number < len(lines) else []

        return get_line
