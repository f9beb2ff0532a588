"""REDCap logic: parsing, precedence, errors with positions, evaluation and enableWhen mapping."""

import csv
from datetime import datetime
from importlib import resources

import pytest

from imt_etl.errors import ImtEtlError, LogicError, UnsupportedLogic
from imt_etl.redcap.dictionary import METADATA_KEYS, DataDictionary
from imt_etl.redcap.logic import (
    And,
    BinaryOp,
    Call,
    Compare,
    FieldRef,
    Literal,
    Negate,
    Or,
    SmartVariable,
    evaluate,
    parse_logic,
    referenced_fields,
    to_enable_when,
)


def ev(text, values=None, **kw):
    return evaluate(parse_logic(text), values or {}, **kw)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "op"),
    [("[a] = 1", "="), ("[a] <> 1", "!="), ("[a] != 1", "!="), ("[a] < 1", "<"),
     ("[a] <= 1", "<="), ("[a] > 1", ">"), ("[a] >= 1", ">=")],
)
def test_each_comparison_operator(text, op):
    assert parse_logic(text) == Compare(op, FieldRef("a"), Literal(1))


def test_quotes_numbers_and_booleans():
    assert parse_logic("[a] = '1'").right == Literal("1")
    assert parse_logic('[a] = "x y"').right == Literal("x y")
    assert parse_logic("[a] = \"it's\"").right == Literal("it's")
    assert parse_logic("[a] = 2.5").right == Literal(2.5)
    assert parse_logic("[a] = .5").right == Literal(0.5)
    assert parse_logic("[a] = TRUE").right == Literal(True)


def test_and_binds_tighter_than_or_and_keywords_ignore_case():
    a, b, c = (Compare("=", FieldRef(n), Literal("1")) for n in "abc")
    assert parse_logic("[a]='1' or [b]='1' AND [c]='1'") == Or((a, And((b, c))))
    assert parse_logic("([a]='1' Or [b]='1') and [c]='1'") == And((Or((a, b)), c))
    assert parse_logic("[a]='1' and [b]='1' and [c]='1'") == And((a, b, c))


def test_brief_example_with_mixed_quotes():
    expr = parse_logic("[age] >= 18 and ([sex] = '2' or [sex]=\"1\")")
    assert isinstance(expr, And) and isinstance(expr.items[1], Or)
    assert referenced_fields(expr) == {"age", "sex"}


def test_checkbox_event_instance_and_smart_references():
    assert parse_logic("[symptoms(5)] = '1'").left == FieldRef("symptoms", checkbox_code="5")
    assert parse_logic("[s(-9)] = '1'").left == FieldRef("s", checkbox_code="-9")
    assert parse_logic("[baseline_arm_1][w] > 3").left == FieldRef("w", event="baseline_arm_1")
    assert parse_logic("[visit_1][sx(2)] = 1").left == FieldRef("sx", "visit_1", "2")
    assert parse_logic("[ae][2] = 1").left == FieldRef("ae", instance="2")
    assert parse_logic("[e1][ae][previous-instance] = 1").left == FieldRef(
        "ae", "e1", None, "previous-instance"
    )
    assert parse_logic("[event-name] = 'baseline_arm_1'").left == SmartVariable("event-name")
    assert parse_logic("[previous-event-name][w] = 1").left == FieldRef(
        "w", event="previous-event-name"
    )


def test_arithmetic_precedence_power_and_unary_minus():
    one, two, three = Literal(1), Literal(2), Literal(3)
    assert parse_logic("1 + 2 * 3") == BinaryOp("+", one, BinaryOp("*", two, three))
    assert parse_logic("2 ^ 3 ^ 2") == BinaryOp("^", two, BinaryOp("^", three, two))
    assert parse_logic("-2^2") == Negate(BinaryOp("^", Literal(2), Literal(2)))
    assert ev("-2^2") == -4.0
    assert ev("10 - 4 - 3") == 3.0
    assert ev("2 ^ 3 ^ 2") == 512.0
    assert ev("(1 + 2) * 3") == 9.0


def test_function_calls_and_referenced_fields():
    expr = parse_logic("if([a] = '1', sum([b], [c(2)]), [d])")
    assert isinstance(expr, Call) and expr.name == "if" and len(expr.args) == 3
    assert referenced_fields(expr) == {"a", "b", "c", "d"}
    assert parse_logic("ROUND([a], 1)") == Call("round", (FieldRef("a"), Literal(1)))


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("[a] = ", 6, "value was expected"),
        ("[a] = '1", 6, "unterminated string"),
        ("[a = '1'", 0, "unterminated '['"),
        ("([a] = '1'", 10, "expected ')'"),
        ("[a] = '1')", 9, "after a complete expression"),
        ("[a] = '1' and", 13, "value was expected"),
        ("[a] == '1'", 5, "value was expected"),
        ("foo([a])", 0, "unknown function"),
        ("[a] = yes", 6, "bare word"),
        ("not([a] = '1')", 0, "unknown function"),
        ("[a] & [b]", 4, "unexpected character"),
        ("1 < [a] < 3", 8, "chained"),
        ("round()", 0, "arguments"),
        ("if([a], 1)", 0, "arguments"),
        ("[a b] = 1", 0, "invalid field reference"),
        ("[e][f][g][h] = 1", 0, "too many"),
        ("   ", 3, "empty"),
    ],
)
def test_malformed_logic_reports_field_and_position(text, position, fragment):
    with pytest.raises(LogicError) as info:
        parse_logic(text, field="mwt_n_stops")
    err = info.value
    assert (err.field, err.text, err.position) == ("mwt_n_stops", text, position)
    assert fragment in err.problem
    assert "mwt_n_stops" in str(err) and f"position {position}" in str(err)
    assert isinstance(err, ImtEtlError) and err.exit_code == 2


def test_every_branching_logic_and_calc_of_the_imt_dictionary_parses():
    text = resources.files("imt_etl.studies.imt").joinpath("data_dictionary.csv").read_text()
    dd = DataDictionary.from_csv_rows(csv.DictReader(text.splitlines()))
    parsed = 0
    for f in dd.fields:
        for source in (f.branching_logic, f.choices_or_calc if f.field_type == "calc" else ""):
            if source.strip():
                parse_logic(source, field=f.name)
                parsed += 1
    assert parsed >= 15


# --------------------------------------------------------------------------- evaluation


def test_numeric_versus_string_comparison():
    assert ev("[a] = 1", {"a": "1.0"}) is True  # both numbers: compared as numbers
    assert ev("[a] = '1'", {"a": "01"}) is True
    assert ev("[a] > 9", {"a": "10"}) is True  # numerically, not "10" < "9" as text
    assert ev("[a] > '9'", {"a": "10"}) is True
    assert ev("[a] = 'abc'", {"a": "abc"}) is True
    assert ev("[a] = 'ABC'", {"a": "abc"}) is False
    assert ev("[a] < 'b'", {"a": "a"}) is True  # text ordering when either side is not a number
    assert ev("[a] >= 18", {"a": "17.99"}) is False


def test_empty_values():
    assert ev("[a] = ''", {"a": ""}) is True
    assert ev("[a] = ''", {}) is True  # a field absent from the row reads as blank
    assert ev("[a] <> ''", {"a": "0"}) is True
    assert ev('[a] != ""', {"a": ""}) is False
    assert ev("[a] = 0", {"a": ""}) is False  # blank is not zero
    assert ev("[a] < 5", {"a": ""}) is False  # blanks never satisfy an ordering comparison
    assert ev("[a] > 5", {"a": ""}) is False
    assert ev("[a] + 1", {"a": ""}) is None  # blank operand -> blank calc


def test_typical_rows_and_or():
    logic = "[age] >= 18 and ([sex] = '2' or [sex]=\"1\")"
    assert ev(logic, {"age": "45", "sex": "1"}) is True
    assert ev(logic, {"age": "45", "sex": "3"}) is False
    assert ev(logic, {"age": "17", "sex": "2"}) is False
    assert ev(logic, {"age": "", "sex": "2"}) is False
    assert ev("[mwt_stops] = '1'", {"mwt_stops": "1"}) is True
    assert ev("[mwt_stops] = '1'", {"mwt_stops": "0"}) is False


def test_checkbox_reads_the_expanded_column():
    row = {"diary_symptoms___5": "1", "diary_symptoms___2": "0", "s___m9": "1"}
    assert ev("[diary_symptoms(5)] = '1'", row) is True
    assert ev("[diary_symptoms(2)] = '1'", row) is False
    assert ev("[diary_symptoms(7)] = '1'", row) is False
    assert ev("[s(M9)] = 1", row) is True  # export names lower-case the code


def test_cross_event_smart_variable_and_instance():
    events = {"baseline_arm_1": {"w": "70"}}
    assert ev("[baseline_arm_1][w] > 60", {"w": "50"}, events=events) is True
    assert ev("[week_6_arm_1][w] = ''", {}, events=events) is True
    assert ev("[event-name][w] = 50", {"w": "50"}) is True
    assert ev("[event-name] = 'v1'", {"redcap_event_name": "v1"}) is True
    assert ev("[record-name] = '7'", {}, smart={"record-name": "7"}) is True
    with pytest.raises(UnsupportedLogic, match="cross-event"):
        ev("[baseline_arm_1][w] > 60", {"w": "50"})
    with pytest.raises(UnsupportedLogic, match="user-name"):
        ev("[user-name] = 'x'", {})
    with pytest.raises(UnsupportedLogic, match="instance"):
        ev("[ae][2] = 1", {})


def test_bmi_calc_with_power():
    bmi = "round(([w]/(([h]/100)^2)),1)"
    assert ev(bmi, {"w": "70", "h": "175"}) == 22.9
    assert ev("round([weight_kg] / (([height_cm] / 100) ^ 2), 1)",
              {"weight_kg": "81.5", "height_cm": "180"}) == 25.2
    assert ev(bmi, {"w": "70", "h": ""}) is None
    assert ev(bmi, {"w": "70", "h": "0"}) is None  # division by zero -> blank


def test_rounding_functions():
    assert ev("round(2.675, 2)") == 2.68  # half away from zero on the decimal text, like PHP
    assert ev("round(-2.5)") == -3.0
    assert ev("round(14.384)") == 14.0
    assert ev("roundup(14.384, 1)") == 14.4
    assert ev("rounddown(14.389, 2)") == 14.38
    assert ev("rounddown(-1.5, 0)") == -1.0
    assert ev("round([a], 1)", {"a": "x"}) is None


def test_aggregate_and_math_functions():
    row = {"a": "1", "b": "", "c": "4", "d": "abc"}
    assert ev("sum([a], [b], [c])", row) == 5.0  # blanks ignored
    assert ev("mean([a], [b], [c], [d])", row) == 2.5
    assert ev("min([a], [c])", row) == 1.0
    assert ev("max([a], [c], -7)", row) == 4.0
    assert ev("median(1, 3, 10)") == 3.0
    assert ev("stdev(2, 4, 4, 4, 5, 5, 7, 9)") == pytest.approx(2.138, abs=1e-3)
    assert ev("sum([b])", row) is None
    assert ev("abs(-7.1)") == 7.1
    assert ev("sqrt(16)") == 4.0
    assert ev("sqrt(-1)") is None


def test_if_isnumber_and_text_functions():
    assert ev("if([a] = '1', 'yes', 'no')", {"a": "1"}) == "yes"
    assert ev("if([a] = '1', 'yes', 'no')", {"a": "2"}) == "no"
    assert ev("isnumber([a])", {"a": "3.5"}) is True
    assert ev("isnumber([a])", {"a": "nan"}) is False
    assert ev("isinteger([a])", {"a": "3.5"}) is False
    assert ev("isblankormissingcode([a])", {"a": " "}) is True
    assert ev("contains([a], 'Lung')", {"a": "lung function"}) is True
    assert ev("not_contain([a], 'x')", {"a": "abc"}) is True
    assert ev("starts_with([a], 'ab') and ends_with([a], 'bc')", {"a": "abc"}) is True


def test_fss_score_formula_from_the_imt_dictionary():
    items = ", ".join(f"[fss_{i}]" for i in range(1, 10))
    guard = " and ".join(f"[fss_{i}] <> ''" for i in range(1, 10))
    formula = f"if({guard}, round(mean({items}), 2), '')"
    full = {f"fss_{i}": str(i % 7 + 1) for i in range(1, 10)}
    assert ev(formula, full) == round(sum(i % 7 + 1 for i in range(1, 10)) / 9, 2)
    assert ev(formula, {**full, "fss_9": ""}) == ""


def test_datediff_units_sign_and_clock():
    row = {"dob": "1980-06-15", "consent": "2024-06-14"}
    assert ev("rounddown(datediff([dob], [consent], 'y', 'ymd'), 0)", row) == 43.0
    assert ev("datediff([consent], [dob], 'd')", row) == 16070.0  # unsigned by default
    assert ev("datediff([consent], [dob], 'd', 'ymd', true)", row) == -16070.0
    assert ev("datediff('2024-01-01', '2024-03-01', 'M')") == pytest.approx(60 / 30.44)
    assert ev("datediff('01/31/2024', '2024-02-01', 'd', 'mdy')") == 1.0
    assert ev("datediff('2024-01-01 08:00', '2024-01-01 09:30', 'm')") == 90.0
    assert ev("datediff([dob], '', 'd')", row) is None
    now = datetime(2024, 6, 15, 12, 0)
    assert ev("datediff([dob], 'today', 'y')", row, now=now) == pytest.approx(44, abs=0.01)
    with pytest.raises(UnsupportedLogic, match="now"):
        ev("datediff([dob], 'today', 'y')", row)
    with pytest.raises(UnsupportedLogic, match="unit"):
        ev("datediff([dob], [consent], 'w')", row)


def test_eligibility_calc_from_the_imt_dictionary():
    inc = ["inc_iim", "inc_age18", "inc_stable"]
    formula = "if(" + " and ".join(f"[{f}] = '1'" for f in inc) + " and [exc_ear] = '0', 1, 0)"
    row = dict.fromkeys(inc, "1") | {"exc_ear": "0"}
    assert ev(formula, row) == 1.0
    assert ev(formula, row | {"exc_ear": "1"}) == 0.0


# --------------------------------------------------------------------------- enableWhen


def _row(name, ftype, choices="", validation=""):
    base = dict.fromkeys(METADATA_KEYS, "")
    base.update(field_name=name, form_name="f", field_type=ftype,
                select_choices_or_calculations=choices,
                text_validation_type_or_show_slider_number=validation)
    return base


DD = DataDictionary.from_metadata([
    _row("record_id", "text"),
    _row("stops", "yesno"),
    _row("sex", "radio", "1, Female | 2, Male"),
    _row("symptoms", "checkbox", "1, Dizzy | 5, Other"),
    _row("age", "text", validation="integer"),
    _row("fev1", "text", validation="number_2dp"),
    _row("visit_date", "text", validation="date_ymd"),
    _row("seen_at", "text", validation="datetime_ymd"),
    _row("other", "text"),
    _row("bmi", "calc", "[w]/[h]"),
])


def ew(text, dictionary=None):
    return to_enable_when(parse_logic(text), dictionary)


def cond(question, op, answer_type, value):
    return {"question": question, "operator": op, "answer": {"type": answer_type, "value": value}}


def test_single_comparison_without_dictionary_types_follow_the_literal():
    assert ew("[stops] = '1'").conditions == [cond("stops", "=", "string", "1")]
    assert ew("[age] >= 18").conditions == [cond("age", ">=", "integer", 18)]
    assert ew("[fev1] < 1.5").conditions == [cond("fev1", "<", "decimal", 1.5)]
    result = ew("[stops] = '1'")
    assert result.behavior is None and result.unsupported is None and result.supported


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[stops] = '1'", cond("stops", "=", "coding", "1")),
        ("[sex] <> '2'", cond("sex", "!=", "coding", "2")),
        ("[sex] != 2", cond("sex", "!=", "coding", "2")),
        ("[age] > '17'", cond("age", ">", "integer", 17)),
        ("[age] <= 65", cond("age", "<=", "integer", 65)),
        ("[fev1] >= '1.25'", cond("fev1", ">=", "decimal", 1.25)),
        ("[bmi] < 30", cond("bmi", "<", "decimal", 30.0)),
        ("[visit_date] > '2024-01-01'", cond("visit_date", ">", "date", "2024-01-01")),
        ("[seen_at] < '2024-01-01 10:00'", cond("seen_at", "<", "dateTime", "2024-01-01 10:00")),
        ("[other] = 'x'", cond("other", "=", "string", "x")),
        ("18 <= [age]", cond("age", ">=", "integer", 18)),
        ("[symptoms(5)] = '1'", cond("symptoms", "=", "coding", "5")),
        ("[symptoms(5)] = 0", cond("symptoms", "!=", "coding", "5")),
        ("[symptoms(1)] <> '1'", cond("symptoms", "!=", "coding", "1")),
        ("[other] <> ''", cond("other", "exists", "boolean", True)),
        ('[other] != ""', cond("other", "exists", "boolean", True)),
        ("[other] = ''", cond("other", "exists", "boolean", False)),
    ],
)
def test_each_supported_form_with_dictionary(text, expected):
    result = ew(text, DD)
    assert result.conditions == [expected]
    assert result.behavior is None and result.unsupported is None


def test_flat_and_list_is_all_and_flat_or_list_is_any():
    result = ew("[stops] = '1' and ([age] >= 18 and [symptoms(5)] = '1')", DD)
    assert result.behavior == "all"
    assert [c["question"] for c in result.conditions] == ["stops", "age", "symptoms"]
    result = ew("[sex] = '1' or [sex] = '2' OR [other] <> ''", DD)
    assert result.behavior == "any"
    assert result.conditions[2] == cond("other", "exists", "boolean", True)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[a] = '1' or [b] = '1' and [c] = '1'", "mixed"),
        ("([a] = '1' or [b] = '1') and [c] = '1'", "mixed"),
        ("[baseline_arm_1][stops] = '1'", "cross-event"),
        ("[ae][2] = '1'", "repeat-instance"),
        ("[a] + [b] > 3", "constant"),
        ("[a] = [b]", "constant"),
        ("datediff([a], [b], 'd') > 3", "constant"),
        ("[event-name] = 'v1'", "constant"),
        ("if([a] = 1, 1, 0)", "not a comparison"),
        ("[symptoms(5)] = '2'", "checkbox"),
        ("[symptoms(5)] > '0'", "checkbox"),
        ("[other] > ''", "ordering comparison with ''"),
    ],
)
def test_unsupported_forms_are_reported(text, reason):
    result = ew(text)
    assert result.conditions == [] and result.behavior is None
    assert reason in result.unsupported and not result.supported


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[sex] > '1'", "choice field"),
        ("[nope] = '1'", "not in the data dictionary"),
        ("[age] = '1.5'", "integer"),
        ("[fev1] = 'high'", "number"),
    ],
)
def test_unsupported_with_dictionary(text, reason):
    assert reason in ew(text, DD).unsupported
