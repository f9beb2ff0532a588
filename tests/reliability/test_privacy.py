"""Pseudonyms, date shifting and identifier removal: stable, keyed, interval-preserving."""

from __future__ import annotations

import re
from datetime import date, datetime
from itertools import pairwise

import pandas as pd
import pytest

from imt_etl import privacy
from imt_etl.errors import ConfigError
from imt_etl.redcap.dictionary import DataDictionary

KEY = b"0123456789abcdef-test-key"
OTHER_KEY = b"fedcba9876543210-test-key"


def test_pseudonym_is_stable_short_and_readable():
    first = privacy.pseudonym("001", KEY, "imt")
    assert first == privacy.pseudonym("001", KEY, "imt")
    assert re.fullmatch(r"P-[A-Z2-7]{16}", first)


def test_pseudonym_depends_on_key_study_and_record():
    base = privacy.pseudonym("001", KEY, "imt")
    assert privacy.pseudonym("001", OTHER_KEY, "imt") != base
    assert privacy.pseudonym("001", KEY, "other-study") != base
    assert privacy.pseudonym("002", KEY, "imt") != base
    # The separator keeps study/record boundaries apart.
    assert privacy.pseudonym("1", KEY, "imt0") != privacy.pseudonym("01", KEY, "imt")


def test_pseudonyms_do_not_collide_on_many_sequential_ids():
    ids = [str(i) for i in range(20000)]
    assert len({privacy.pseudonym(i, KEY, "imt") for i in ids}) == len(ids)


def test_pseudonym_is_not_an_unkeyed_hash_of_the_record_id():
    import base64
    import hashlib

    unkeyed = base64.b32encode(hashlib.sha256(b"001").digest()[:10]).decode()
    assert privacy.pseudonym("001", KEY, "imt") != "P-" + unkeyed


def test_key_from_env_requires_a_long_enough_key():
    with pytest.raises(ConfigError, match=privacy.KEY_ENV):
        privacy.key_from_env({})
    with pytest.raises(ConfigError, match="at least 16"):
        privacy.key_from_env({privacy.KEY_ENV: "short"})
    assert privacy.key_from_env({privacy.KEY_ENV: " " + "k" * 20 + " "}) == b"k" * 20


def test_demo_key_only_when_asked_for(caplog):
    assert privacy.key_from_env({}, allow_demo=True) == privacy.DEMO_KEY
    assert "demo key" in caplog.text
    assert privacy.key_from_env({privacy.KEY_ENV: "x" * 16}, allow_demo=True) == b"x" * 16


def test_a_short_key_is_refused_by_the_functions_too():
    with pytest.raises(ConfigError):
        privacy.pseudonym("001", b"short", "imt")


def test_date_shift_is_constant_nonzero_and_bounded():
    shifts = [privacy.date_shift_days(str(i), KEY, max_days=30) for i in range(3000)]
    assert all(-30 <= s <= 30 and s != 0 for s in shifts)
    assert min(shifts) == -30 and max(shifts) == 30  # the whole range is used
    assert sum(s > 0 for s in shifts) in range(1350, 1650)  # both directions, evenly
    assert privacy.date_shift_days("7", KEY, max_days=30) == shifts[7]
    assert privacy.date_shift_days("7", OTHER_KEY, max_days=30) != shifts[7] or (
        privacy.date_shift_days("8", OTHER_KEY, max_days=30) != shifts[8]
    )


def test_date_shift_rejects_a_useless_range():
    with pytest.raises(ConfigError):
        privacy.date_shift_days("1", KEY, max_days=0)


def test_shifting_keeps_intervals_and_formats():
    days = privacy.date_shift_days("001", KEY)
    visits = ["2024-01-31", "2024-03-01", "2024-12-31 23:59", "2024-02-29 08:15:30"]
    shifted = [privacy.shift_date(v, days) for v in visits]
    for before, after in zip(visits, shifted, strict=True):
        assert len(after) == len(before)  # same text format
    as_dt = [pd.Timestamp(v) for v in shifted]
    original = [pd.Timestamp(v) for v in visits]
    assert [b - a for a, b in pairwise(as_dt)] == [b - a for a, b in pairwise(original)]
    assert as_dt[0] - original[0] == pd.Timedelta(days=days)


def test_shift_date_types_and_blanks():
    assert privacy.shift_date(date(2024, 2, 28), 1) == date(2024, 2, 29)
    assert privacy.shift_date(datetime(2024, 1, 1, 9), -1) == datetime(2023, 12, 31, 9)
    assert privacy.shift_date(pd.Timestamp("2024-01-01"), 2) == pd.Timestamp("2024-01-03")
    for blank in (None, "", "  ", float("nan"), pd.NaT):
        result = privacy.shift_date(blank, 5)
        assert result is blank
    with pytest.raises(ValueError, match="31/01/2024"):
        privacy.shift_date("31/01/2024", 3)


def test_shift_dates_on_columns():
    text = pd.Series(["2024-01-01", None, "2024-01-10"], dtype="string")
    assert privacy.shift_dates(text, 3).tolist() == ["2024-01-04", pd.NA, "2024-01-13"]
    stamps = pd.Series(pd.to_datetime(["2024-01-01", None]))
    shifted = privacy.shift_dates(stamps, -1)
    assert shifted.dtype == stamps.dtype and shifted[0] == pd.Timestamp("2023-12-31")


def dictionary() -> DataDictionary:
    base = {"form_name": "enrollment", "field_label": "x"}
    rows = [
        {"field_name": "record_id", "field_type": "text"},
        {"field_name": "first_name", "field_type": "text", "identifier": "y"},
        {"field_name": "mrn", "field_type": "text", "identifier": "y"},
        {"field_name": "contact", "field_type": "checkbox", "identifier": "y",
         "select_choices_or_calculations": "1, Phone | 2, Email"},
        {"field_name": "sex", "field_type": "radio",
         "select_choices_or_calculations": "1, F | 2, M"},
        {"field_name": "mrn_ok", "field_type": "yesno"},
    ]
    return DataDictionary.from_metadata([{**base, **r} for r in rows])


def test_identifier_fields_include_the_record_id():
    assert privacy.identifier_fields(dictionary()) == {"record_id", "first_name", "mrn", "contact"}


def test_reference_study_identifiers(reference_project):
    found = privacy.identifier_fields(reference_project.dictionary)
    assert {"record_id", "first_name", "last_name", "mrn", "dob", "email", "phone"} <= found
    assert "mip_kh2_best" not in found


def test_drop_identifiers_removes_every_derived_column_unless_allowed():
    frame = pd.DataFrame({
        "record_id": ["1"], "redcap_event_name": ["baseline"], "first_name": ["Ann"],
        "mrn": ["X1"], "mrn_missing": [None], "mrn_ok": [1], "contact___1": [True],
        "contact___2": [False], "sex": [1], "sex_label": ["F"], "nickname": ["Annie"],
    })
    # tidy's notes tie a column to its field even when the name does not show it
    frame.attrs["columns"] = {"nickname": {"field": "first_name"}, "sex": {"field": "sex"}}
    kept = privacy.drop_identifiers(frame, dictionary())
    assert list(kept.columns) == ["redcap_event_name", "mrn_ok", "sex", "sex_label"]
    assert kept.attrs["columns"] == {"sex": {"field": "sex"}}
    assert "Ann" not in kept.to_csv() and "X1" not in kept.to_csv()
    allowed = privacy.drop_identifiers(frame, dictionary(), allow={"record_id", "mrn"})
    assert {"record_id", "mrn", "mrn_missing"} <= set(allowed.columns)
    assert "first_name" not in allowed.columns and "nickname" not in allowed.columns
    assert list(frame.columns)[0] == "record_id"  # the input is not modified


def test_date_shifting_is_configured_by_the_study_or_the_run():
    from imt_etl.dateshift import max_shift_days
    from imt_etl.errors import ConfigError

    assert max_shift_days({}) == 0  # off unless asked for
    assert max_shift_days({"date_shifting": {"max_days": 90}}) == 90
    assert max_shift_days({"date_shifting": {"max_days": 90, "enabled": False}}) == 0
    assert max_shift_days({"date_shifting": {"max_days": 90}}, override=0) == 0
    assert max_shift_days({}, override=30) == 30
    for bad in ({"max_days": "90"}, {"max_days": -1}, {"days": 90}, [90], {"max_days": True}):
        with pytest.raises(ConfigError, match="date_shifting"):
            max_shift_days({"date_shifting": bad})
