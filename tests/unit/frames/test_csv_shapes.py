"""The numpy proofs of `storey.frames._csv_shapes` against Arrow's regex (the reference they shortcut).

Soundness: whenever a proof says every value matches, Arrow's ``match_substring_regex`` agrees on every
value. Completeness on the layouts they exist for: plain decimals and same-layout in-range datetimes are
proven (so the fast path is really taken, not always deferred to the regex).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from storey.frames._csv_shapes import fixed_datetimes, plain_decimals
from storey.frames._io_csv import _DATETIME, _FLOAT


def _regex_all(values: list[str | None], pattern: str) -> bool:
    return pc.all(pc.match_substring_regex(pa.array(values, pa.string()), pattern)).as_py() is not False


def _plain(value: str) -> bool:
    body = value[1:] if value[:1] in ("+", "-") else value
    digits = sum(c.isdigit() for c in body)
    return len(value) <= 30 and set(body) <= set("0123456789.") and body.count(".") <= 1 and digits >= 1


floats = st.lists(
    st.one_of(
        st.none(),
        st.text(alphabet="0123456789.+-eE", min_size=1, max_size=34),
        st.from_regex(r"[+-]?[0-9]{0,16}\.?[0-9]{0,16}", fullmatch=True).filter(bool),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300)
@given(floats, st.integers(0, 3))
def test_plain_decimals_is_sound_and_takes_plain_columns(values: list[str | None], cut: int) -> None:
    arr = pa.array(values, pa.string()).slice(min(cut, len(values) - 1))  # offsets that do not start at 0
    kept = arr.to_pylist()
    proven = plain_decimals(arr)
    if proven:
        assert _regex_all(kept, _FLOAT)
    real = [v for v in kept if v is not None]
    if real and all(_plain(v) for v in real) and arr.null_count == 0:
        assert proven


def _two(value: int) -> str:
    return f"{value:02d}"


@st.composite
def datetime_columns(draw: st.DrawFn) -> tuple[list[str], bool]:
    """Values of one layout with fields drawn partly out of range; and whether all are in range."""
    sep = draw(st.sampled_from(["T", " "]))
    time_part = draw(st.sampled_from(["none", "hm", "hms", "frac"]))
    digits = draw(st.integers(1, 9))
    zone = draw(st.sampled_from(["", "Z", "+", "-"]))
    n = draw(st.integers(1, 12))
    wide = draw(st.booleans())
    values, in_range = [], True
    for _ in range(n):
        month = draw(st.integers(0, 19) if wide else st.integers(1, 12))
        day = draw(st.integers(0, 39) if wide else st.integers(1, 31))
        hour = draw(st.integers(0, 29) if wide else st.integers(0, 23))
        minute, second = (draw(st.integers(0, 69) if wide else st.integers(0, 59)) for _ in range(2))
        tzh = draw(st.integers(0, 29) if wide else st.integers(0, 23))
        tzm = draw(st.integers(0, 69) if wide else st.integers(0, 59))
        text = f"{draw(st.integers(0, 9999)):04d}-{_two(month)}-{_two(day)}"
        ok = 1 <= month <= 12 and 1 <= day <= 31
        if time_part != "none":
            text += f"{sep}{_two(hour)}:{_two(minute)}"
            ok = ok and hour <= 23 and minute <= 59
            if time_part in ("hms", "frac"):
                text += f":{_two(second)}"
                ok = ok and second <= 59
            if time_part == "frac":
                text += "." + "".join(str(draw(st.integers(0, 9))) for _ in range(digits))
            if zone == "Z":
                text += "Z"
            elif zone:
                text += f"{zone}{_two(tzh)}:{_two(tzm)}"
                ok = ok and tzh <= 23 and tzm <= 59
        values.append(text)
        in_range = in_range and ok
    return values, in_range


@settings(max_examples=300)
@given(datetime_columns(), st.integers(-1, 30), st.sampled_from(["x", "1", "-", ":", "T", "\u00e9"]))
def test_fixed_datetimes_is_sound_and_takes_same_layout_columns(
    column: tuple[list[str], bool], spoil: int, char: str
) -> None:
    values, in_range = column
    assert _regex_all(values, _DATETIME) == in_range  # the generator knows what the regex accepts
    arr = pa.array(values, pa.string())
    assert fixed_datetimes(arr) == in_range
    if 0 <= spoil < len(values[-1]):  # one byte of the last value changed: the proof must not overclaim
        last = values[-1]
        values = [*values[:-1], last[:spoil] + char + last[spoil + 1 :]]
        if fixed_datetimes(pa.array(values, pa.string())):
            assert _regex_all(values, _DATETIME)


def test_columns_with_nulls_or_other_types_are_left_to_the_regex() -> None:
    assert not fixed_datetimes(pa.array(["2024-01-01T00:00:00Z", None]))
    assert not fixed_datetimes(pa.array(["2024-01-01", "2024-01-01T00:00"]))  # two layouts
    assert not plain_decimals(pa.array(["1.5"], pa.large_string()))
    assert not plain_decimals(pa.array([None, None], pa.string()))
