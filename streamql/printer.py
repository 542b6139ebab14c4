"""Print an AST back to StreamQL source.

The output parses to an equal tree, and every literal is rendered exactly (floats by their
shortest round-trip form), which is how fleet fragments travel to edges.
"""
from __future__ import annotations

import math
from functools import singledispatch

from . import ast as A
from .values import FunctionRef, Time

# Binding strength, loosest first, as in the grammar.
OR, AND, NOT, COMPARISON, SUM, PRODUCT, UNARY, POWER, POSTFIX, PRIMARY = range(1, 11)

_BINARY_LEVEL = {"+": SUM, "-": SUM, "*": PRODUCT, "/": PRODUCT, "%": PRODUCT, ".*": PRODUCT,
                 "./": PRODUCT, "^": POWER, ".^": POWER}


def to_source(node: A.Node) -> str:
    if isinstance(node, A.Expr):
        return _expr(node, 0)
    return _print(node)


def level_of(expr: A.Expr) -> int:
    if isinstance(expr, A.Or):
        return OR
    if isinstance(expr, A.And):
        return AND
    if isinstance(expr, A.Not):
        return NOT
    if isinstance(expr, (A.Compare, A.In, A.InList, A.Between, A.Like, A.IsNull)):
        return COMPARISON
    if isinstance(expr, A.BinaryOp):
        return _BINARY_LEVEL[expr.op]
    if isinstance(expr, A.Negate):
        return UNARY
    if isinstance(expr, A.Literal) and _is_negative_number(expr.value):
        return UNARY
    if isinstance(expr, (A.Index, A.Slice, A.Field, A.AtEdge)):
        return POSTFIX
    return PRIMARY


def _is_negative_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and (value < 0 or (isinstance(value, float) and math.copysign(1.0, value) < 0)))


def _expr(expr: A.Expr, minimum: int) -> str:
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


@singledispatch
def _print(node) -> str:
    raise TypeError(f"cannot print {type(node).__name__}")


def _list(items, sep: str = ", ") -> str:
    return sep.join(_expr(item, 0) if isinstance(item, A.Expr) else _print(item) for item in items)


# ------------------------------------------------------------------------------- expressions
@_print.register
def _(node: A.Literal) -> str:
    return literal_source(node.value)


@_print.register
def _(node: A.Variable) -> str:
    return node.name


@_print.register
def _(node: A.SessionVariable) -> str:
    return ":" + node.name


@_print.register
def _(node: A.Call) -> str:
    if node.star:
        return f"{node.name}(*)"
    if node.distinct:
        return f"{node.name}(distinct {_list(node.args)})"
    return f"{node.name}({_list(node.args)})"


@_print.register
def _(node: A.BinaryOp) -> str:
    level = _BINARY_LEVEL[node.op]
    if level == POWER:  # right-associative: postfix ^ unary
        return f"{_expr(node.left, POSTFIX)} {node.op} {_expr(node.right, UNARY)}"
    return f"{_expr(node.left, level)} {node.op} {_expr(node.right, level + 1)}"


@_print.register
def _(node: A.Negate) -> str:
    operand = _expr(node.operand, UNARY)
    # `- -x` would read back as x (signs cancel): keep the inner negation in parentheses
    return f"-({operand})" if operand.startswith("-") else "-" + operand


@_print.register
def _(node: A.Compare) -> str:
    return f"{_expr(node.left, SUM)} {node.op} {_expr(node.right, SUM)}"


@_print.register
def _(node: A.And) -> str:
    return f"{_expr(node.left, AND)} and {_expr(node.right, NOT)}"


@_print.register
def _(node: A.Or) -> str:
    return f"{_expr(node.left, OR)} or {_expr(node.right, AND)}"


@_print.register
def _(node: A.Not) -> str:
    return f"not {_expr(node.operand, NOT)}"


def _not(negated: bool) -> str:
    return "not " if negated else ""


@_print.register
def _(node: A.In) -> str:
    return f"{_expr(node.element, SUM)} {_not(node.negated)}in {_expr(node.collection, SUM)}"


@_print.register
def _(node: A.InList) -> str:
    return f"{_expr(node.element, SUM)} {_not(node.negated)}in ({_list(node.items)})"


@_print.register
def _(node: A.Between) -> str:
    return (f"{_expr(node.operand, SUM)} {_not(node.negated)}between "
            f"{_expr(node.low, SUM)} and {_expr(node.high, SUM)}")


@_print.register
def _(node: A.Like) -> str:
    return f"{_expr(node.operand, SUM)} {_not(node.negated)}like {_expr(node.pattern, SUM)}"


@_print.register
def _(node: A.IsNull) -> str:
    return f"{_expr(node.operand, SUM)} is {_not(node.negated)}null"


@_print.register
def _(node: A.Index) -> str:
    return f"{_expr(node.target, POSTFIX)}[{_expr(node.index, 0)}]"


@_print.register
def _(node: A.Slice) -> str:
    return f"{_expr(node.target, POSTFIX)}[{_expr(node.start, 0)}:{_expr(node.stop, 0)}]"


@_print.register
def _(node: A.Field) -> str:
    return f"{_expr(node.target, POSTFIX)}.{node.name}"


@_print.register
def _(node: A.AtEdge) -> str:
    return f"{_expr(node.expr, POSTFIX)}@{_expr(node.edge, PRIMARY)}"


@_print.register
def _(node: A.Cast) -> str:
    return f"cast({_expr(node.operand, 0)} as {_print(node.type)})"


@_print.register
def _(node: A.VectorLiteral) -> str:
    return f"[{_list(node.items)}]"


@_print.register
def _(node: A.RecordLiteral) -> str:
    inner = ", ".join(f'"{key.replace(chr(34), chr(34) * 2)}": {_expr(value, 0)}' for key, value in node.fields)
    return "{" + inner + "}"


@_print.register
def _(node: A.Case) -> str:
    parts = ["case"] + [f"when {_expr(c, 0)} then {_expr(v, 0)}" for c, v in node.whens]
    if node.otherwise is not None:
        parts.append(f"else {_expr(node.otherwise, 0)}")
    parts.append("end")
    return " ".join(parts)


@_print.register
def _(node: A.Subquery) -> str:
    return f"({_print(node.query)})"


@_print.register
def _(node: A.TypeExpr) -> str:
    return node.name if node.of is None else f"{node.name} of {_print(node.of)}"


# -------------------------------------------------------------------------------- statements
@_print.register
def _(node: A.Declaration) -> str:
    return f"{_print(node.type)} {node.name}"


@_print.register
def _(node: A.SelectItem) -> str:
    text = _expr(node.expr, 0)
    return f"{text} as {node.alias}" if node.alias else text


@_print.register
def _(node: A.OrderItem) -> str:
    return _expr(node.expr, 0) + (" desc" if node.descending else "")


@_print.register
def _(node: A.Select) -> str:
    parts = ["select"]
    if node.distinct:
        parts.append("distinct")
    if node.kind:
        parts.append(f"{node.kind} of")
    parts.append("*" if node.items is None else _list(node.items))
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


@_print.register
def _(node: A.ExprStatement) -> str:
    return _expr(node.expr, 0)


@_print.register
def _(node: A.Property) -> str:
    return f"{node.name} {_print(node.type)}" + (" key" if node.key else "")


@_print.register
def _(node: A.CreateType) -> str:
    text = f"create type {node.name}"
    if node.supertypes:
        text += " under " + ", ".join(node.supertypes)
    if node.properties:
        text += " properties (" + _list(node.properties) + ")"
    return text


def _rows(rows) -> str:
    return ", ".join("(" + _list(row) + ")" for row in rows)


@_print.register
def _(node: A.CreateInstances) -> str:
    functions = f" ({', '.join(node.functions)})" if node.functions else ""
    return f"create {node.type_name}{functions} instances {_rows(node.rows)}"


@_print.register
def _(node: A.Parameter) -> str:
    return f"{_print(node.type)} {node.name}"


@_print.register
def _(node: A.StoredBody) -> str:
    return "stored"


@_print.register
def _(node: A.CreateFunction) -> str:
    body = _print(node.body) if not isinstance(node.body, A.Expr) else _expr(node.body, 0)
    return (f"create function {node.name}({_list(node.parameters)}) -> {_print(node.result)} "
            f"as {body}")


def _model_name(name: str) -> str:
    return name if name.isidentifier() else literal_source(name)


@_print.register
def _(node: A.CreateModel) -> str:
    source = f"from {literal_source(node.path)}" if node.path is not None else f"as {_expr(node.expr, 0)}"
    version = f" version {literal_source(node.version)}" if node.version is not None else ""
    return f"create model {_model_name(node.name)} {source}{version}"


@_print.register
def _(node: A.ColumnDef) -> str:
    return f"{node.name} {_print(node.type)}" + (" not null" if node.not_null else "")


@_print.register
def _(node: A.CreateTable) -> str:
    elements = [_print(c) for c in node.columns]
    elements += [f"unique({', '.join(u)})" for u in node.unique]
    if node.primary_key:
        elements.append(f"primary key({', '.join(node.primary_key)})")
    return f"create table {node.name}({', '.join(elements)})"


@_print.register
def _(node: A.Insert) -> str:
    columns = f" ({', '.join(node.columns)})" if node.columns else ""
    return f"insert into {node.table}{columns} values {_rows(node.rows)}"


@_print.register
def _(node: A.SetFunction) -> str:
    text = f"set {node.function}({_list(node.args)}) = {_expr(node.value, 0)}"
    if node.declarations:
        text += " from " + _list(node.declarations)
    if node.where is not None:
        text += " where " + _expr(node.where, 0)
    return text


@_print.register
def _(node: A.SetVariable) -> str:
    return f"set :{node.name} = {_expr(node.value, 0)}"


@_print.register
def _(node: A.Delete) -> str:
    text = f"delete {_print(node.declaration)}"
    return text + (" where " + _expr(node.where, 0) if node.where is not None else "")


@_print.register
def _(node: A.Drop) -> str:
    name = node.name if node.name.isidentifier() else literal_source(node.name)
    return f"drop {node.kind} {name}"


@_print.register
def _(node: A.Explain) -> str:
    return "explain " + _print(node.statement)


@_print.register
def _(node: A.Check) -> str:
    return f"check {_expr(node.expr, 0)} => {_expr(node.expected, 0)}"


@_print.register
def _(node: A.Validate) -> str:
    return f"validate {literal_source(node.name)} " + " ".join(_print(c) for c in node.checks)


@_print.register
def _(node: A.EdgeSelection) -> str:
    text = _print(node.declaration)
    return text + (" where " + _expr(node.where, 0) if node.where is not None else "")


@_print.register
def _(node: A.Rollout) -> str:
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


def _rollout(node: A.Rollout | None) -> str:
    text = _print(node) if node is not None else ""
    return " " + text if text else ""


@_print.register
def _(node: A.Deploy) -> str:
    version = f" version {literal_source(node.version)}" if node.version else ""
    return f"deploy model {literal_source(node.model)}{version} to {_print(node.selection)}{_rollout(node.rollout)}"


@_print.register
def _(node: A.Rollback) -> str:
    version = f" to version {literal_source(node.version)}" if node.version else ""
    return (f"rollback model {literal_source(node.model)}{version} on {_print(node.selection)}"
            f"{_rollout(node.rollout)}")


@_print.register
def _(node: A.Undeploy) -> str:
    return f"undeploy model {literal_source(node.model)} from {_print(node.selection)}{_rollout(node.rollout)}"


@_print.register
def _(node: A.Script) -> str:
    return "\n".join(_print(s) + ";" for s in node.statements)
