"""Print an AST back to StreamQL source.

The output parses to an equal tree, and every literal is rendered exactly (floats by their
shortest round-trip form), which is how fleet fragments travel to edges.

The printer knows the nodes by their class names rather than importing them: the nodes print
themselves through it (`node.sql()`), so the AST module imports the printer, never the reverse.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .values import FunctionRef, Time

# Binding strength, loosest first, as in the grammar.
OR, AND, NOT, COMPARISON, SUM, PRODUCT, UNARY, POWER, POSTFIX, PRIMARY = range(1, 11)

_BINARY_LEVEL = {"+": SUM, "-": SUM, "*": PRODUCT, "/": PRODUCT, "%": PRODUCT, ".*": PRODUCT,
                 "./": PRODUCT, "^": POWER, ".^": POWER}


_LEVELS = {"Or": OR, "And": AND, "Not": NOT, "Compare": COMPARISON, "In": COMPARISON, "InList": COMPARISON,
           "Between": COMPARISON, "Like": COMPARISON, "IsNull": COMPARISON, "Negate": UNARY,
           "Index": POSTFIX, "Slice": POSTFIX, "Field": POSTFIX, "AtEdge": POSTFIX}


def to_source(node) -> str:
    """Any node (an ast.Node) as source."""
    return _print(node)


def level_of(expr) -> int:
    name = type(expr).__name__
    if name == "BinaryOp":
        return _BINARY_LEVEL[expr.op]
    if name == "Literal" and _is_negative_number(expr.value):
        return UNARY
    return _LEVELS.get(name, PRIMARY)


def _is_negative_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and (value < 0 or (isinstance(value, float) and math.copysign(1.0, value) < 0)))


def _expr(expr, minimum: int) -> str:
    """Print expr, parenthesised when it binds more loosely than `minimum` requires."""
    text = _print(expr)
    return f"({text})" if level_of(expr) < minimum else text


def literal_source(value) -> str:
    """A literal value as source that reads back as exactly the same value."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "cast('nan' as Real)"
        if math.isinf(value):
            return "1e999" if value > 0 else "-1e999"
        text = repr(value)
        return text
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, Time):
        return f"|{value.iso()}|"
    if isinstance(value, FunctionRef):
        return f"#'{value.name}'"
    raise TypeError(f"no literal syntax for {type(value).__name__}")


_PRINTERS: dict[str, Callable[[Any], str]] = {}   # node class name → how it prints


def _prints(name: str):
    def register(fn: Callable[[Any], str]) -> Callable[[Any], str]:
        _PRINTERS[name] = fn
        return fn
    return register


def _print(node) -> str:
    for cls in type(node).__mro__:   # a subclass of a node prints as the node
        printer = _PRINTERS.get(cls.__name__)
        if printer is not None:
            return printer(node)
    raise TypeError(f"cannot print {type(node).__name__}")


def _list(items, sep: str = ", ") -> str:
    return sep.join(_print(item) for item in items)


# ------------------------------------------------------------------------------- expressions
@_prints("Literal")
def _(node) -> str:
    return literal_source(node.value)


@_prints("Variable")
def _(node) -> str:
    return node.name


@_prints("SessionVariable")
def _(node) -> str:
    return ":" + node.name


@_prints("Call")
def _(node) -> str:
    if node.star:
        return f"{node.name}(*)"
    if node.distinct:
        return f"{node.name}(distinct {_list(node.args)})"
    return f"{node.name}({_list(node.args)})"


@_prints("BinaryOp")
def _(node) -> str:
    level = _BINARY_LEVEL[node.op]
    if level == POWER:  # right-associative: postfix ^ unary
        return f"{_expr(node.left, POSTFIX)} {node.op} {_expr(node.right, UNARY)}"
    return f"{_expr(node.left, level)} {node.op} {_expr(node.right, level + 1)}"


@_prints("Negate")
def _(node) -> str:
    operand = _expr(node.operand, UNARY)
    # `- -x` would read back as x (signs cancel): keep the inner negation in parentheses
    return f"-({operand})" if operand.startswith("-") else "-" + operand


@_prints("Compare")
def _(node) -> str:
    return f"{_expr(node.left, SUM)} {node.op} {_expr(node.right, SUM)}"


@_prints("And")
def _(node) -> str:
    return f"{_expr(node.left, AND)} and {_expr(node.right, NOT)}"


@_prints("Or")
def _(node) -> str:
    return f"{_expr(node.left, OR)} or {_expr(node.right, AND)}"


@_prints("Not")
def _(node) -> str:
    return f"not {_expr(node.operand, NOT)}"


def _not(negated: bool) -> str:
    return "not " if negated else ""


@_prints("In")
def _(node) -> str:
    return f"{_expr(node.element, SUM)} {_not(node.negated)}in {_expr(node.collection, SUM)}"


@_prints("InList")
def _(node) -> str:
    return f"{_expr(node.element, SUM)} {_not(node.negated)}in ({_list(node.items)})"


@_prints("Between")
def _(node) -> str:
    return (f"{_expr(node.operand, SUM)} {_not(node.negated)}between "
            f"{_expr(node.low, SUM)} and {_expr(node.high, SUM)}")


@_prints("Like")
def _(node) -> str:
    return f"{_expr(node.operand, SUM)} {_not(node.negated)}like {_expr(node.pattern, SUM)}"


@_prints("IsNull")
def _(node) -> str:
    return f"{_expr(node.operand, SUM)} is {_not(node.negated)}null"


@_prints("Index")
def _(node) -> str:
    return f"{_expr(node.target, POSTFIX)}[{_expr(node.index, 0)}]"


@_prints("Slice")
def _(node) -> str:
    return f"{_expr(node.target, POSTFIX)}[{_expr(node.start, 0)}:{_expr(node.stop, 0)}]"


@_prints("Field")
def _(node) -> str:
    return f"{_expr(node.target, POSTFIX)}.{node.name}"


@_prints("AtEdge")
def _(node) -> str:
    return f"{_expr(node.expr, POSTFIX)}@{_expr(node.edge, PRIMARY)}"


@_prints("Cast")
def _(node) -> str:
    return f"cast({_expr(node.operand, 0)} as {_print(node.type)})"


@_prints("VectorLiteral")
def _(node) -> str:
    return f"[{_list(node.items)}]"


@_prints("RecordLiteral")
def _(node) -> str:
    inner = ", ".join(f'"{key.replace(chr(34), chr(34) * 2)}": {_expr(value, 0)}' for key, value in node.fields)
    return "{" + inner + "}"


@_prints("Case")
def _(node) -> str:
    parts = ["case"] + [f"when {_expr(c, 0)} then {_expr(v, 0)}" for c, v in node.whens]
    if node.otherwise is not None:
        parts.append(f"else {_expr(node.otherwise, 0)}")
    parts.append("end")
    return " ".join(parts)


@_prints("Subquery")
def _(node) -> str:
    return f"({_print(node.query)})"


@_prints("TypeExpr")
def _(node) -> str:
    return node.name if node.of is None else f"{node.name} of {_print(node.of)}"


@_prints("TupleType")
def _(node) -> str:
    return "(" + _list(node.parts) + ")"


# -------------------------------------------------------------------------------- statements
@_prints("Declaration")
def _(node) -> str:
    return f"{_print(node.type)} {node.name}"


@_prints("SelectItem")
def _(node) -> str:
    text = _expr(node.expr, 0)
    return f"{text} as {node.alias}" if node.alias else text


@_prints("OrderItem")
def _(node) -> str:
    return _expr(node.expr, 0) + (" desc" if node.descending else "")


@_prints("Select")
def _(node) -> str:
    parts = ["select"]
    if node.distinct:
        parts.append("distinct")
    if node.kind:
        parts.append(f"{node.kind} of")
    parts.append("*" if node.items is None else _list(node.items))
    if node.into:
        parts.append("into " + ", ".join(":" + name for name in node.into))
    if node.declarations:
        parts.append("from " + _list(node.declarations))
    if node.where is not None:
        parts.append("where " + _expr(node.where, 0))
    if node.group_by:
        parts.append("group by " + _list(node.group_by))
    if node.having is not None:
        parts.append("having " + _expr(node.having, 0))
    if node.order_by:
        parts.append("order by " + _list(node.order_by))
    if node.limit is not None:
        parts.append("limit " + _expr(node.limit, 0))
    return " ".join(parts)


@_prints("ExprStatement")
def _(node) -> str:
    return _expr(node.expr, 0)


@_prints("Property")
def _(node) -> str:
    return f"{node.name} {_print(node.type)}" + (" key" if node.key else "")


@_prints("CreateType")
def _(node) -> str:
    text = f"create type {node.name}"
    if node.supertypes:
        text += " under " + ", ".join(node.supertypes)
    if node.properties:
        text += " properties (" + _list(node.properties) + ")"
    return text


def _rows(rows) -> str:
    return ", ".join("(" + _list(row) + ")" for row in rows)


@_prints("CreateInstances")
def _(node) -> str:
    functions = f" ({', '.join(node.functions)})" if node.functions else ""
    if node.variables:
        mark = "" if node.local else ":"
        items = [(f"{mark}{var}" if var else "") + (f" ({_list(row)})" if row else "")
                 for var, row in zip(node.variables, node.rows)]
        return f"create {node.type_name}{functions} instances {', '.join(i.strip() for i in items)}"
    return f"create {node.type_name}{functions} instances {_rows(node.rows)}"


@_prints("Parameter")
def _(node) -> str:
    return f"{_print(node.type)} {node.name}" if node.name else _print(node.type)


@_prints("ForeignBody")
def _(node) -> str:
    return "foreign " + literal_source(node.target)


@_prints("StoredBody")
def _(node) -> str:
    return "stored"


@_prints("CreateFunction")
def _(node) -> str:
    body = _print(node.body)
    result = _print(node.result) + (f" {node.result_name}" if node.result_name else "") \
        + (" key" if node.key else "")
    return f"create function {node.name}({_list(node.parameters)}) -> {result} as {body}"


def _model_name(name: str) -> str:
    return name if name.isidentifier() else literal_source(name)


@_prints("CreateModel")
def _(node) -> str:
    source = f"from {literal_source(node.path)}" if node.path is not None else f"as {_expr(node.expr, 0)}"
    version = f" version {literal_source(node.version)}" if node.version is not None else ""
    return f"create model {_model_name(node.name)} {source}{version}"


@_prints("ColumnDef")
def _(node) -> str:
    return f"{node.name} {_print(node.type)}" + (" not null" if node.not_null else "")


@_prints("CreateTable")
def _(node) -> str:
    elements = [_print(c) for c in node.columns]
    elements += [f"unique({', '.join(u)})" for u in node.unique]
    if node.primary_key:
        elements.append(f"primary key({', '.join(node.primary_key)})")
    return f"create table {node.name}({', '.join(elements)})"


@_prints("Insert")
def _(node) -> str:
    columns = f" ({', '.join(node.columns)})" if node.columns else ""
    return f"insert into {node.table}{columns} values {_rows(node.rows)}"


@_prints("SetFunction")
def _(node) -> str:
    text = f"{node.mode} {node.function}({_list(node.args)}) = {_expr(node.value, 0)}"
    if node.declarations:
        text += " from " + _list(node.declarations)
    if node.where is not None:
        text += " where " + _expr(node.where, 0)
    return text


@_prints("SetVariable")
def _(node) -> str:
    return f"set :{node.name} = {_expr(node.value, 0)}"


@_prints("Delete")
def _(node) -> str:
    text = f"delete {_print(node.declaration)}"
    return text + (" where " + _expr(node.where, 0) if node.where is not None else "")


@_prints("Drop")
def _(node) -> str:
    name = node.name if node.name.isidentifier() else literal_source(node.name)
    return f"drop {node.kind} {name}"


@_prints("Explain")
def _(node) -> str:
    return "explain " + _print(node.statement)


@_prints("Check")
def _(node) -> str:
    return f"check {_expr(node.expr, 0)} => {_expr(node.expected, 0)}"


@_prints("Validate")
def _(node) -> str:
    return f"validate {literal_source(node.name)} " + " ".join(_print(c) for c in node.checks)


@_prints("EdgeSelection")
def _(node) -> str:
    text = _print(node.declaration)
    return text + (" where " + _expr(node.where, 0) if node.where is not None else "")


@_prints("Rollout")
def _(node) -> str:
    parts = []
    if node.waves is not None:
        parts.append(f"over {node.waves} waves")
    if node.wave_sizes:
        sizes = ", ".join(literal_source(n) + (" percent" if percent else "") for n, percent in node.wave_sizes)
        parts.append(f"over waves of {sizes}")
    if node.abort_above is not None:
        parts.append(f"abort above {literal_source(node.abort_above)} percent")
    if node.wave_timeout is not None:
        parts.append(f"wave timeout {literal_source(node.wave_timeout)} seconds")
    if node.rollback_on_abort:
        parts.append("rollback on abort")
    return " ".join(parts)


def _rollout(node) -> str:
    text = _print(node) if node is not None else ""
    return " " + text if text else ""


@_prints("Deploy")
def _(node) -> str:
    version = f" version {literal_source(node.version)}" if node.version else ""
    return f"deploy model {literal_source(node.model)}{version} to {_print(node.selection)}{_rollout(node.rollout)}"


@_prints("Rollback")
def _(node) -> str:
    version = f" to version {literal_source(node.version)}" if node.version else ""
    return (f"rollback model {literal_source(node.model)}{version} on {_print(node.selection)}"
            f"{_rollout(node.rollout)}")


@_prints("Undeploy")
def _(node) -> str:
    return f"undeploy model {literal_source(node.model)} from {_print(node.selection)}{_rollout(node.rollout)}"


@_prints("Script")
def _(node) -> str:
    return "\n".join(_print(s) + ";" for s in node.statements)


@_prints("DeleteObject")
def _(node) -> str:
    return f"delete :{node.variable}"


@_prints("DeclareVariables")
def _(node) -> str:
    return "declare " + ", ".join(f"{_print(t)} :{name}" for t, name in node.items)


@_prints("Toploop")
def _(node) -> str:
    return node.command


@_prints("OpenCursor")
def _(node) -> str:
    return f"open :{node.name} for {_expr(node.expr, 0)}"


@_prints("FetchCursor")
def _(node) -> str:
    return f"fetch :{node.name}" + (" into " + ", ".join(f":{n}" for n in node.into) if node.into else "")


@_prints("CloseCursor")
def _(node) -> str:
    return f"close :{node.name}"


@_prints("Block")
def _(node) -> str:
    return "{ " + " ".join(_print(s) + ";" for s in node.statements) + " }"


@_prints("ForEach")
def _(node) -> str:
    where = f" where {_expr(node.where, 0)}" if node.where is not None else ""
    return f"for each {_list(node.declarations)}{where} {_print(node.body)}"


@_prints("If")
def _(node) -> str:
    otherwise = f" else {_print(node.otherwise)}" if node.otherwise is not None else ""
    return f"if {_expr(node.condition, 0)} then {_print(node.then)}{otherwise}"


@_prints("Return")
def _(node) -> str:
    return "return" + (f" {_expr(node.value, 0)}" if node.value is not None else "")


@_prints("SetLocal")
def _(node) -> str:
    return f"set {node.name} = {_expr(node.value, 0)}"


@_prints("DeclareLocal")
def _(node) -> str:
    return "declare " + ", ".join(f"{_print(t)} {name}" for t, name in node.items)


@_prints("ProcCall")
def _(node) -> str:
    return _expr(node.call, 0)
