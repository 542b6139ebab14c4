"""The function reference, generated from the registry so the docs cannot drift from the code."""
from __future__ import annotations

from ..registry import Library

TOPICS = {"operator": "Operators", "math": "Numbers", "vector": "Vectors", "aggregate": "Aggregates",
          "time": "Time", "stream": "Streams and windows", "io": "Files", "model": "Models",
          "function": "Functions as values", "general": "General", "fleet": "Fleets"}


def markdown_reference(library: Library) -> str:
    """One table per topic: signature, what it does, and whether it is volatile."""
    by_topic: dict[str, list] = {}
    for overload in library.all():
        by_topic.setdefault(overload.topic, []).append(overload)
    out = []
    for topic in list(TOPICS) + sorted(set(by_topic) - set(TOPICS)):
        overloads = by_topic.get(topic)
        if not overloads:
            continue
        out.append(f"### {TOPICS.get(topic, topic.title())}\n")
        out.append("| signature | description | notes |")
        out.append("|---|---|---|")
        for o in overloads:
            notes = []
            if o.volatile:
                notes.append("volatile")
            if o.elementwise:
                notes.append("elementwise on vectors")
            if o.split is not None:
                notes.append("fleet split: " + ", ".join(o.split.parts))
            elif o.kind == "aggregate":
                notes.append("no fleet split")
            signature = o.signature.replace("|", "\\|")
            out.append(f"| `{signature}` | {o.doc} | {'; '.join(notes)} |")
        out.append("")
    return "\n".join(out)
