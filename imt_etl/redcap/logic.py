"""REDCap branching logic and calc formulas: parse to an AST, evaluate rows, map to enableWhen.

Grammar (lowest precedence first; `and`/`or` are case-insensitive, REDCap has no `not` keyword):

    expr    := and_ ("or" and_)*
    and_    := cmp ("and" cmp)*
    cmp     := sum (("=" | "<>" | "!=" | "<" | "<=" | ">" | ">=") sum)?
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := ("-" | "+") unary | power
    power   := atom ("^" unary)?              (right-associative, binds tighter than unary minus)
    atom    := NUMBER | STRING | true | false | NAME "(" args ")" | "(" expr ")" | brackets
    brackets:= "[" ... "]" one to three times: [field], [field(code)], [event][field],
               [field][instance], [event][field][instance], [smart-variable]
"""

from __future__ import annotations

import logging
import math
import re
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Decimal, InvalidOperation
from typing import Literal as TypingLiteral

from imt_etl.errors import LogicError, UnsupportedLogic
from imt_etl.redcap.dictionary import CHOICE_TYPES, FIXED_CHOICES, DataDictionary, checkbox_column

logger = logging.getLogger(__name__)

Value = bool | float | str | None


# --------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class FieldRef:
    """`[field]`, `[field(code)]` (checkbox option), `[event][field]`, `[field][instance]`."""

    field: str
    event: str | None = None
    checkbox_code: str | None = None
    instance: str | None = None


@dataclass(frozen=True)
class SmartVariable:
    """A REDCap smart variable on its own, e.g. `[event-name]` or `[record-name]`."""

    name: str


@dataclass(frozen=True)
class Literal:
    """A number (int or float), a quoted string, or true/false."""

    value: int | float | str | bool


@dataclass(frozen=True)
class Compare:
    op: str  # one of = != < <= > >= ; `<>` is normalised to `!=`
    left: Expr
    right: Expr


@dataclass(frozen=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class BinaryOp:
    op: str  # + - * / ^
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Negate:
    operand: Expr


@dataclass(frozen=True)
class Call:
    name: str  # lower case
    args: tuple[Expr, ...]


Expr = FieldRef | SmartVariable | Literal | Compare | And | Or | BinaryOp | Negate | Call

# Function name -> (min args, max args or None for any number).
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "if": (3, 3),
    "sum": (1, None), "mean": (1, None), "median": (1, None), "stdev": (1, None),
    "min": (1, None), "max": (1, None),
    "round": (1, 2), "roundup": (1, 2), "rounddown": (1, 2),
    "abs": (1, 1), "sqrt": (1, 1),
    "datediff": (3, 5),
    "isnumber": (1, 1), "isinteger": (1, 1), "isblankormissingcode": (1, 1),
    "contains": (2, 2), "not_contain": (2, 2), "starts_with": (2, 2), "ends_with": (2, 2),
}
INSTANCE_SMART = frozenset(
    {"current-instance", "previous-instance", "next-instance", "first-instance", "last-instance"}
)
COMPARE_OPS = ("<=", ">=", "<>", "!=", "=", "<", ">")

# --------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True)
class _Token:
    kind: str  # NUM STR NAME BRACKET OP EOF
    text: str
    pos: int


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<NUM>\d+(?:\.\d*)?|\.\d+)
  | (?P<STR>'[^']*'|"[^"]*")
  | (?P<NAME>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<BRACKET>\[[^\[\]]*\])
  | (?P<OP><=|>=|<>|!=|[=<>+\-*/^(),])
    """,
    re.VERBOSE,
)


def _tokenize(text: str, field: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            ch = text[pos]
            problem = "unterminated string" if ch in "'\"" else f"unexpected character {ch!r}"
            if ch == "[":
                problem = "unterminated '['"
            raise LogicError(field, text, pos, problem)
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(_Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(_Token("EOF", "", len(text)))
    return tokens


# --------------------------------------------------------------------------- parser

_FIELD_RE = re.compile(r"([A-Za-z][A-Za-z0-9_]*)(?:\(([A-Za-z0-9_.\-]+)\))?")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_SMART_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)+(?::[A-Za-z0-9_,\-]+)?")


class _Parser:
    def __init__(self, text: str, field: str):
        self.text = text
        self.field = field
        self.tokens = _tokenize(text, field)
        self.i = 0

    # helpers
    def peek(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def error(self, message: str, tok: _Token | None = None) -> LogicError:
        return LogicError(self.field, self.text, (tok or self.peek()).pos, message)

    def at_keyword(self, word: str) -> bool:
        tok = self.peek()
        return tok.kind == "NAME" and tok.text.lower() == word

    def expect_op(self, op: str) -> _Token:
        tok = self.peek()
        if tok.kind != "OP" or tok.text != op:
            found = "end of logic" if tok.kind == "EOF" else repr(tok.text)
            raise self.error(f"expected {op!r}, found {found}")
        return self.advance()

    # grammar
    def parse(self) -> Expr:
        if self.peek().kind == "EOF":
            raise self.error("logic is empty")
        expr = self.parse_or()
        tok = self.peek()
        if tok.kind != "EOF":
            raise self.error(f"unexpected {tok.text!r} after a complete expression")
        return expr

    def parse_or(self) -> Expr:
        items = [self.parse_and()]
        while self.at_keyword("or"):
            self.advance()
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self) -> Expr:
        items = [self.parse_compare()]
        while self.at_keyword("and"):
            self.advance()
            items.append(self.parse_compare())
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_compare(self) -> Expr:
        left = self.parse_sum()
        tok = self.peek()
        if tok.kind == "OP" and tok.text in COMPARE_OPS:
            self.advance()
            right = self.parse_sum()
            nxt = self.peek()
            if nxt.kind == "OP" and nxt.text in COMPARE_OPS:
                raise self.error("comparisons cannot be chained; use 'and'")
            return Compare("!=" if tok.text == "<>" else tok.text, left, right)
        return left

    def parse_sum(self) -> Expr:
        left = self.parse_product()
        while self.peek().kind == "OP" and self.peek().text in "+-":
            op = self.advance().text
            left = BinaryOp(op, left, self.parse_product())
        return left

    def parse_product(self) -> Expr:
        left = self.parse_unary()
        while self.peek().kind == "OP" and self.peek().text in ("*", "/"):
            op = self.advance().text
            left = BinaryOp(op, left, self.parse_unary())
        return left

    def parse_unary(self) -> Expr:
        tok = self.peek()
        if tok.kind == "OP" and tok.text in "+-":
            self.advance()
            operand = self.parse_unary()
            return Negate(operand) if tok.text == "-" else operand
        return self.parse_power()

    def parse_power(self) -> Expr:
        base = self.parse_atom()
        if self.peek().kind == "OP" and self.peek().text == "^":
            self.advance()
            return BinaryOp("^", base, self.parse_unary())
        return base

    def parse_atom(self) -> Expr:
        tok = self.peek()
        if tok.kind == "NUM":
            self.advance()
            return Literal(float(tok.text) if "." in tok.text else int(tok.text))
        if tok.kind == "STR":
            self.advance()
            return Literal(tok.text[1:-1])
        if tok.kind == "BRACKET":
            return self.parse_brackets()
        if tok.kind == "NAME":
            return self.parse_name()
        if tok.kind == "OP" and tok.text == "(":
            self.advance()
            inner = self.parse_or()
            self.expect_op(")")
            return inner
        if tok.kind == "EOF":
            raise self.error("logic ends where a value was expected")
        raise self.error(f"unexpected {tok.text!r} where a value was expected")

    def parse_name(self) -> Expr:
        tok = self.advance()
        word = tok.text.lower()
        if word in ("true", "false"):
            return Literal(word == "true")
        if word in ("and", "or"):
            raise self.error(f"{word!r} needs a condition before it", tok)
        if self.peek().kind != "OP" or self.peek().text != "(":
            raise self.error(f"bare word {tok.text!r}: field names go in [brackets]", tok)
        if word not in FUNCTIONS:
            raise self.error(f"unknown function {tok.text!r}", tok)
        self.advance()
        args: list[Expr] = []
        if not (self.peek().kind == "OP" and self.peek().text == ")"):
            args.append(self.parse_or())
            while self.peek().kind == "OP" and self.peek().text == ",":
                self.advance()
                args.append(self.parse_or())
        self.expect_op(")")
        low, high = FUNCTIONS[word]
        if len(args) < low or (high is not None and len(args) > high):
            want = f"{low}+" if high is None else f"{low}" if low == high else f"{low}-{high}"
            raise self.error(f"{word}() takes {want} arguments, got {len(args)}", tok)
        return Call(word, tuple(args))

    def parse_brackets(self) -> Expr:
        first = self.peek()
        parts: list[_Token] = []
        # Adjacent brackets belong together: `[event][field]`, `[field][2]`.
        while self.peek().kind == "BRACKET" and len(parts) < 3:
            tok = self.advance()
            if parts and tok.pos != parts[-1].pos + len(parts[-1].text):
                self.i -= 1
                break
            parts.append(tok)
        inner = [p.text[1:-1].strip() for p in parts]
        if len(inner) == 1 and _SMART_RE.fullmatch(inner[0]):
            return SmartVariable(inner[0])
        instance = None
        if len(inner) >= 2 and (inner[-1].isdigit() or inner[-1] in INSTANCE_SMART):
            instance = inner.pop()
        if len(inner) == 1:
            event = None
        elif len(inner) == 2:
            event = inner[0]
            if not (_NAME_RE.fullmatch(event) or _SMART_RE.fullmatch(event)):
                raise self.error(f"invalid event name [{event}]", parts[0])
        else:
            raise self.error("too many [bracketed] parts in one reference", first)
        m = _FIELD_RE.fullmatch(inner[-1])
        if m is None:
            raise self.error(f"invalid field reference [{inner[-1]}]", parts[len(inner) - 1])
        return FieldRef(m.group(1).lower(), event, m.group(2), instance)


def parse_logic(text: str, *, field: str = "") -> Expr:
    """Parse REDCap logic or a calc formula; LogicError(field, text, position, message) if bad."""
    return _Parser(text, field).parse()


def referenced_fields(expr: Expr) -> set[str]:
    """Field names (not checkbox columns, not events) the expression reads."""
    match expr:
        case FieldRef(field=name):
            return {name}
        case Compare(left=a, right=b) | BinaryOp(left=a, right=b):
            return referenced_fields(a) | referenced_fields(b)
        case And(items=items) | Or(items=items) | Call(args=items):
            return set().union(*(referenced_fields(i) for i in items))
        case Negate(operand=a):
            return referenced_fields(a)
        case _:
            return set()


# --------------------------------------------------------------------------- evaluation


def _number(value: Value) -> float | None:
    """The value as a number if REDCap would treat it as one (bools are not numbers here)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return None if math.isnan(value) else float(value)
    text = value.strip()
    # float() also accepts 'nan', 'inf' and '1_000'; REDCap numbers are plain decimals.
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", text):
        return None
    return float(text)


def _text(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _truthy(value: Value) -> bool:
    if isinstance(value, bool):
        return value
    num = _number(value)
    if num is not None:
        return num != 0
    return _text(value) != ""


def _compare(op: str, left: Value, right: Value) -> bool:
    ln, rn = _number(left), _number(right)
    if ln is not None and rn is not None:
        a: float | str = ln
        b: float | str = rn
    else:
        a, b = _text(left), _text(right)
        # A blank never satisfies an ordering comparison (REDCap does not treat '' as 0).
        if op not in ("=", "!=") and (a == "" or b == ""):
            return False
    match op:
        case "=":
            return a == b
        case "!=":
            return a != b
        case "<":
            return a < b
        case "<=":
            return a <= b
        case ">":
            return a > b
        case _:
            return a >= b


def _arith(op: str, left: Value, right: Value) -> float | None:
    a, b = _number(left), _number(right)
    if a is None or b is None:
        return None  # a blank or text operand gives a blank result, as in a REDCap calc field
    try:
        match op:
            case "+":
                return a + b
            case "-":
                return a - b
            case "*":
                return a * b
            case "/":
                return a / b
            case _:
                result = a**b
                return None if isinstance(result, complex) else float(result)
    except (ZeroDivisionError, OverflowError):
        return None


@dataclass(frozen=True)
class _Context:
    values: Mapping[str, str]
    events: Mapping[str, Mapping[str, str]] | None
    smart: Mapping[str, str]
    now: datetime | None
    text: str
    field: str

    def unsupported(self, message: str) -> UnsupportedLogic:
        return UnsupportedLogic(self.field, self.text, None, message)


def _row_for(ref: FieldRef, ctx: _Context) -> Mapping[str, str]:
    if ref.instance is not None and ref.instance != "current-instance":
        raise ctx.unsupported(f"instance reference [{ref.field}][{ref.instance}]")
    if ref.event is None or ref.event == "event-name":
        return ctx.values
    if ctx.events is None:
        raise ctx.unsupported(f"cross-event reference [{ref.event}][{ref.field}] needs `events`")
    # An event with no data for this record reads as blank, as in REDCap.
    return ctx.events.get(ref.event, {})


def _read_field(ref: FieldRef, ctx: _Context) -> str:
    row = _row_for(ref, ctx)
    if ref.checkbox_code is not None:
        return row.get(checkbox_column(ref.field, ref.checkbox_code), "") or ""
    # A field missing from the row (another form, not exported) is blank.
    return row.get(ref.field, "") or ""


def _read_smart(var: SmartVariable, ctx: _Context) -> str:
    if var.name in ctx.smart:
        return ctx.smart[var.name]
    if var.name == "event-name" and "redcap_event_name" in ctx.values:
        return ctx.values["redcap_event_name"]
    raise ctx.unsupported(f"smart variable [{var.name}] has no value (pass it in `smart`)")


def evaluate(
    expr: Expr,
    values: Mapping[str, str],
    *,
    events: Mapping[str, Mapping[str, str]] | None = None,
    smart: Mapping[str, str] | None = None,
    now: datetime | None = None,
    text: str = "",
    field: str = "",
) -> Value:
    """Evaluate on one raw export row (all values strings, checkboxes as `f___code`).

    `events` maps an event name (as written in the logic) to that event's row for cross-event
    references; `smart` gives smart-variable values; `now` is needed only by 'today'/'now' in
    datediff (transforms never read the clock). `text`/`field` only label UnsupportedLogic.
    """
    ctx = _Context(values, events, smart or {}, now, text, field)
    return _eval(expr, ctx)


def _eval(expr: Expr, ctx: _Context) -> Value:
    match expr:
        case Literal(value=v):
            return float(v) if isinstance(v, int) and not isinstance(v, bool) else v
        case FieldRef():
            return _read_field(expr, ctx)
        case SmartVariable():
            return _read_smart(expr, ctx)
        case Compare(op=op, left=a, right=b):
            return _compare(op, _eval(a, ctx), _eval(b, ctx))
        case And(items=items):
            return all(_truthy(_eval(i, ctx)) for i in items)
        case Or(items=items):
            return any(_truthy(_eval(i, ctx)) for i in items)
        case BinaryOp(op=op, left=a, right=b):
            return _arith(op, _eval(a, ctx), _eval(b, ctx))
        case Negate(operand=a):
            num = _number(_eval(a, ctx))
            return None if num is None else -num
        case Call():
            return _call(expr, ctx)
    raise ctx.unsupported(f"cannot evaluate {expr!r}")


_Handler = Callable[[Call, "_Context"], Value]


def _numbers(args: tuple[Expr, ...], ctx: _Context) -> list[float]:
    """Numeric arguments, skipping blanks and text (REDCap's sum/mean/min/max ignore blanks)."""
    nums = (_number(_eval(a, ctx)) for a in args)
    return [n for n in nums if n is not None]


def _aggregate(fn: Callable[[list[float]], float], minimum: int = 1) -> _Handler:
    def run(call: Call, ctx: _Context) -> Value:
        nums = _numbers(call.args, ctx)
        return float(fn(nums)) if len(nums) >= minimum else None

    return run


def _rounder(mode: str) -> _Handler:
    def run(call: Call, ctx: _Context) -> Value:
        num = _number(_eval(call.args[0], ctx))
        places = _number(_eval(call.args[1], ctx)) if len(call.args) > 1 else 0.0
        if num is None or places is None:
            return None
        # Decimal on the shortest repr so round(2.675, 2) gives 2.68 like PHP, not 2.67.
        step = Decimal(1).scaleb(-int(places))
        return float(Decimal(repr(num)).quantize(step, rounding=mode))

    return run


def _single(fn: Callable[[float], float | None]) -> _Handler:
    def run(call: Call, ctx: _Context) -> Value:
        num = _number(_eval(call.args[0], ctx))
        return None if num is None else fn(num)

    return run


def _strings(fn: Callable[[str, str], bool]) -> _Handler:
    def run(call: Call, ctx: _Context) -> Value:
        hay, needle = (_text(_eval(a, ctx)).lower() for a in call.args)
        return fn(hay, needle)

    return run


def _if(call: Call, ctx: _Context) -> Value:
    cond, then, other = call.args
    return _eval(then, ctx) if _truthy(_eval(cond, ctx)) else _eval(other, ctx)


def _isinteger(call: Call, ctx: _Context) -> Value:
    return bool(re.fullmatch(r"[+-]?\d+", _text(_eval(call.args[0], ctx)).strip()))


_DATE_FORMATS = {"ymd": ("%Y", "%m", "%d"), "mdy": ("%m", "%d", "%Y"), "dmy": ("%d", "%m", "%Y")}
# REDCap's datediff divides days by these for years and months.
_UNIT_SECONDS = {"y": 365.2425 * 86400, "M": 30.44 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def _parse_date(raw: str, fmt: str, ctx: _Context) -> datetime | None:
    raw = raw.strip()
    if raw == "":
        return None
    if raw.lower() in ("today", "now"):
        if ctx.now is None:  # transforms never read the clock: the caller passes the run time
            raise ctx.unsupported(f"datediff with {raw!r} needs `now`")
        midnight = datetime.combine(ctx.now.date(), datetime.min.time())
        return ctx.now if raw.lower() == "now" else midnight
    # Raw exports store dates as Y-M-D whatever the field's display format; literals follow `fmt`.
    orders = [_DATE_FORMATS["ymd"], _DATE_FORMATS.get(fmt, _DATE_FORMATS["ymd"])]
    for order in orders:
        for sep in ("-", "/"):
            for tail in ("", " %H:%M", " %H:%M:%S"):
                try:
                    return datetime.strptime(raw, sep.join(order) + tail)
                except ValueError:
                    continue
    return None


def _datediff(call: Call, ctx: _Context) -> Value:
    raw = [_eval(a, ctx) for a in call.args]
    unit = _text(raw[2])
    if unit not in _UNIT_SECONDS:
        raise ctx.unsupported(f"datediff unit {unit!r} (use y, M, d, h, m or s)")
    fmt = _text(raw[3]).lower() if len(raw) > 3 else "ymd"
    signed = len(raw) > 4 and _truthy(raw[4])
    first, second = (_parse_date(_text(v), fmt, ctx) for v in raw[:2])
    if first is None or second is None:
        return None
    seconds = (second - first).total_seconds() / _UNIT_SECONDS[unit]
    return seconds if signed else abs(seconds)


def _stdev(nums: list[float]) -> float:
    return statistics.stdev(nums)


_CALLS: dict[str, _Handler] = {
    "if": _if,
    "sum": _aggregate(math.fsum, minimum=1),
    "mean": _aggregate(statistics.fmean),
    "median": _aggregate(statistics.median),
    "stdev": _aggregate(_stdev, minimum=2),
    "min": _aggregate(min),
    "max": _aggregate(max),
    "round": _rounder(ROUND_HALF_UP),
    "roundup": _rounder(ROUND_UP),
    "rounddown": _rounder(ROUND_DOWN),
    "abs": _single(abs),
    "sqrt": _single(lambda x: math.sqrt(x) if x >= 0 else None),
    "datediff": _datediff,
    "isnumber": lambda call, ctx: _number(_eval(call.args[0], ctx)) is not None,
    "isinteger": _isinteger,
    "isblankormissingcode": lambda call, ctx: _text(_eval(call.args[0], ctx)).strip() == "",
    "contains": _strings(lambda h, n: n in h),
    "not_contain": _strings(lambda h, n: n not in h),
    "starts_with": _strings(str.startswith),
    "ends_with": _strings(str.endswith),
}
assert set(_CALLS) == set(FUNCTIONS)  # the parser's arity table and the evaluator agree


def _call(call: Call, ctx: _Context) -> Value:
    try:
        return _CALLS[call.name](call, ctx)
    except (InvalidOperation, statistics.StatisticsError, ValueError, OverflowError):
        return None  # REDCap shows a blank when a function cannot compute


# --------------------------------------------------------------------------- FHIR enableWhen

AnswerType = TypingLiteral["coding", "integer", "decimal", "string", "boolean", "date", "dateTime"]
_FLIP = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


@dataclass(frozen=True)
class EnableWhenResult:
    """enableWhen conditions, or `unsupported` saying why the logic cannot be expressed.

    Each condition is `{"question": linkId, "operator": op, "answer": {"type": t, "value": v}}`:
    the Questionnaire builder turns it into `answer<Type>` (answerCoding needs its system).
    `exists` conditions always carry `{"type": "boolean", "value": True|False}`.
    """

    conditions: list[dict]
    behavior: TypingLiteral["all", "any"] | None
    unsupported: str | None = None

    @property
    def supported(self) -> bool:
        return self.unsupported is None


class _Untranslatable(Exception):
    pass


def to_enable_when(expr: Expr, dictionary: DataDictionary | None = None) -> EnableWhenResult:
    """Translate logic to FHIR R4 Questionnaire.item.enableWhen (the flat and/or subset).

    Without a dictionary the answer type follows the literal (quoted -> string, 1 -> integer,
    1.5 -> decimal; checkbox options are always coding). With one it follows the field type:
    choice fields give coding (ordering comparisons on them are unsupported), integer/number
    validations give integer/decimal, date validations give date/dateTime.
    """
    if isinstance(expr, And | Or):
        kind = type(expr)
        leaves = _flatten(expr, kind)
        behavior: TypingLiteral["all", "any"] | None = "all" if kind is And else "any"
    else:
        leaves, behavior = [expr], None
    try:
        conditions = [_condition(leaf, dictionary) for leaf in leaves]
    except _Untranslatable as exc:
        return EnableWhenResult([], None, str(exc))
    return EnableWhenResult(conditions, behavior)


def _flatten(expr: Expr, kind: type) -> list[Expr]:
    """`a and (b and c)` -> [a, b, c]; a nested `or` inside `and` (or vice versa) stays a leaf."""
    if isinstance(expr, kind):
        return [leaf for item in expr.items for leaf in _flatten(item, kind)]  # type: ignore[union-attr]
    return [expr]


def _condition(leaf: Expr, dictionary: DataDictionary | None) -> dict:
    if isinstance(leaf, And | Or):
        raise _Untranslatable("mixed 'and'/'or' nesting needs more than one enableBehavior")
    if not isinstance(leaf, Compare):
        raise _Untranslatable(f"not a comparison: {_describe(leaf)}")
    op, ref, lit = leaf.op, leaf.left, leaf.right
    if isinstance(lit, FieldRef) and isinstance(ref, Literal):
        op, ref, lit = _FLIP[op], lit, ref
    if not isinstance(ref, FieldRef) or not isinstance(lit, Literal):
        raise _Untranslatable(f"only [field] vs a constant is supported: {_describe(leaf)}")
    if ref.event is not None:
        raise _Untranslatable(f"cross-event reference [{ref.event}][{ref.field}]")
    if ref.instance is not None:
        raise _Untranslatable(f"repeat-instance reference [{ref.field}][{ref.instance}]")
    if ref.checkbox_code is not None:
        return _checkbox_condition(ref, op, lit)
    if lit.value == "" and op in ("=", "!="):
        return _cond(ref.field, "exists", "boolean", op == "!=")
    if lit.value == "":
        raise _Untranslatable(f"ordering comparison with '' on [{ref.field}]")
    answer_type = _answer_type(ref.field, op, lit, dictionary)
    return _cond(ref.field, op, answer_type, _answer_value(ref.field, answer_type, lit))


def _checkbox_condition(ref: FieldRef, op: str, lit: Literal) -> dict:
    checked = _text(lit.value)
    if op not in ("=", "!=") or checked not in ("0", "1"):
        option = f"[{ref.field}({ref.checkbox_code})]"
        raise _Untranslatable(f"checkbox {option} must be compared = 0 or 1")
    # `[f(c)] = '1'` -> f has answer c; `= '0'` or `<> '1'` -> f does not have answer c.
    selected = (checked == "1") == (op == "=")
    return _cond(ref.field, "=" if selected else "!=", "coding", ref.checkbox_code)


def _cond(question: str, op: str, answer_type: str, value: object) -> dict:
    return {"question": question, "operator": op, "answer": {"type": answer_type, "value": value}}


def _answer_type(name: str, op: str, lit: Literal, dictionary: DataDictionary | None) -> str:
    if dictionary is None:
        if isinstance(lit.value, bool):
            return "boolean"
        if isinstance(lit.value, int):
            return "integer"
        return "decimal" if isinstance(lit.value, float) else "string"
    if not dictionary.has_field(name):
        raise _Untranslatable(f"[{name}] is not in the data dictionary")
    fld = dictionary.field(name)
    if fld.field_type in CHOICE_TYPES or fld.field_type in FIXED_CHOICES:
        if op not in ("=", "!="):
            raise _Untranslatable(f"ordering comparison {op!r} on choice field [{name}]")
        return "coding"
    validation = fld.validation
    if fld.field_type == "slider" or validation == "integer":
        return "integer"
    if fld.field_type == "calc" or validation.startswith("number"):
        return "decimal"
    if validation.startswith("datetime"):
        return "dateTime"
    return "date" if validation.startswith("date") else "string"


def _answer_value(name: str, answer_type: str, lit: Literal) -> object:
    text = _text(lit.value)
    if answer_type == "integer":
        if not re.fullmatch(r"[+-]?\d+", text):
            raise _Untranslatable(f"[{name}] is an integer but is compared with {text!r}")
        return int(text)
    if answer_type == "decimal":
        num = _number(lit.value)
        if num is None:
            raise _Untranslatable(f"[{name}] is a number but is compared with {text!r}")
        return num
    if answer_type == "boolean":
        return bool(lit.value)
    return text


def _describe(expr: Expr) -> str:
    return type(expr).__name__ if not isinstance(expr, Call) else f"{expr.name}()"
