"""parse_times: GreenArrow's date formats (and a few common extras) to UTC, null where they fail."""
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mail_pipeline.times import DATE_FORMATS, format_hint, parse_times


def utc(*parts) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def parse(values, date_format="mdy") -> list:
    frame = pl.DataFrame({"t": values}, schema={"t": pl.String})
    out = frame.select(parse_times(pl.col("t"), date_format))
    assert out.schema == {"t": pl.Datetime("us", "UTC")}
    return out["t"].to_list()


MARCH_11 = utc(1994, 3, 11)
NOV_3 = utc(1994, 11, 3)

# (text, expected with mdy, expected with dmy). GreenArrow's list first, its example being
# March 11 1994 14:30:47 in -06:00; in the numeric forms dmy reads the same text as 3 November.
GREENARROW = [
    ("1994-03-11T14:30:47-06:00", utc(1994, 3, 11, 20, 30, 47), utc(1994, 3, 11, 20, 30, 47)),
    ("March 11, 1994 14:30", utc(1994, 3, 11, 14, 30), utc(1994, 3, 11, 14, 30)),
    ("March 11, 1994", MARCH_11, MARCH_11),
    ("11 March 1994", MARCH_11, MARCH_11),
    ("03-11-1994 2:30:47pm", utc(1994, 3, 11, 14, 30, 47), utc(1994, 11, 3, 14, 30, 47)),
    ("03-11-1994 14:30:47", utc(1994, 3, 11, 14, 30, 47), utc(1994, 11, 3, 14, 30, 47)),
    ("03-11-1994 2:30pm", utc(1994, 3, 11, 14, 30), utc(1994, 11, 3, 14, 30)),
    ("03-11-1994 14:30", utc(1994, 3, 11, 14, 30), utc(1994, 11, 3, 14, 30)),
    ("03-11-1994", MARCH_11, NOV_3),
    ("03/11/1994 2:30:47pm", utc(1994, 3, 11, 14, 30, 47), utc(1994, 11, 3, 14, 30, 47)),
    ("03/11/1994 14:30:47", utc(1994, 3, 11, 14, 30, 47), utc(1994, 11, 3, 14, 30, 47)),
    ("03/11/1994 2:30pm", utc(1994, 3, 11, 14, 30), utc(1994, 11, 3, 14, 30)),
    ("03/11/1994 14:30", utc(1994, 3, 11, 14, 30), utc(1994, 11, 3, 14, 30)),
    ("03/11/1994", MARCH_11, NOV_3),
    ("1994-03-11 14:30", utc(1994, 3, 11, 14, 30), utc(1994, 3, 11, 14, 30)),
    ("1994-03-11", MARCH_11, MARCH_11),
]
EXTRAS = [
    # ISO variants: Mailchimp's OPTIN_TIME, Z and other offsets, fractions, a space for the T.
    ("1994-03-11 14:30:47", utc(1994, 3, 11, 14, 30, 47), utc(1994, 3, 11, 14, 30, 47)),
    ("1994-03-11T14:30:47", utc(1994, 3, 11, 14, 30, 47), utc(1994, 3, 11, 14, 30, 47)),
    ("1994-03-11T14:30:47Z", utc(1994, 3, 11, 14, 30, 47), utc(1994, 3, 11, 14, 30, 47)),
    ("1994-03-11T14:30Z", utc(1994, 3, 11, 14, 30), utc(1994, 3, 11, 14, 30)),
    ("1994-03-11 14:30:47-06:00", utc(1994, 3, 11, 20, 30, 47), utc(1994, 3, 11, 20, 30, 47)),
    ("1994-03-11T14:30:47+0000", utc(1994, 3, 11, 14, 30, 47), utc(1994, 3, 11, 14, 30, 47)),
    ("1994-03-11T14:30:47+05:30", utc(1994, 3, 11, 9, 0, 47), utc(1994, 3, 11, 9, 0, 47)),
    ("1994-03-11T14:30-06:00", utc(1994, 3, 11, 20, 30), utc(1994, 3, 11, 20, 30)),
    ("1994-03-11T14:30:47.25", utc(1994, 3, 11, 14, 30, 47, 250000),
     utc(1994, 3, 11, 14, 30, 47, 250000)),
    ("1994-03-11T14:30:47.123456Z", utc(1994, 3, 11, 14, 30, 47, 123456),
     utc(1994, 3, 11, 14, 30, 47, 123456)),
    ("1994-03-11T14:30:47.5-06:00", utc(1994, 3, 11, 20, 30, 47, 500000),
     utc(1994, 3, 11, 20, 30, 47, 500000)),
    ("1994-03-11T23:30:00-06:00", utc(1994, 3, 12, 5, 30), utc(1994, 3, 12, 5, 30)),
    # Month names abbreviated and in any case.
    ("Mar 11, 1994", MARCH_11, MARCH_11),
    ("MARCH 11, 1994", MARCH_11, MARCH_11),
    ("march 11, 1994 14:30", utc(1994, 3, 11, 14, 30), utc(1994, 3, 11, 14, 30)),
    ("11 mar 1994", MARCH_11, MARCH_11),
    ("Sep 1, 1994", utc(1994, 9, 1), utc(1994, 9, 1)),
    # AM/PM in any case, with or without a space; 12am is midnight and 12pm noon.
    ("03/11/1994 2:30PM", utc(1994, 3, 11, 14, 30), utc(1994, 11, 3, 14, 30)),
    ("03/11/1994 2:30 pm", utc(1994, 3, 11, 14, 30), utc(1994, 11, 3, 14, 30)),
    ("03-11-1994 2:30:47 AM", utc(1994, 3, 11, 2, 30, 47), utc(1994, 11, 3, 2, 30, 47)),
    ("03/11/1994 12:00am", MARCH_11, NOV_3),
    ("03/11/1994 12:30pm", utc(1994, 3, 11, 12, 30), utc(1994, 11, 3, 12, 30)),
    # Single-digit day, month and hour.
    ("3/1/1994", utc(1994, 3, 1), utc(1994, 1, 3)),
    ("3-1-1994 9:05", utc(1994, 3, 1, 9, 5), utc(1994, 1, 3, 9, 5)),
    ("1994-3-1 9:05", utc(1994, 3, 1, 9, 5), utc(1994, 3, 1, 9, 5)),
]
CASES = GREENARROW + EXTRAS


@pytest.mark.parametrize("date_format", DATE_FORMATS)
@pytest.mark.parametrize(("text", "mdy", "dmy"), CASES)
def test_each_format_parses_to_utc(text, mdy, dmy, date_format):
    assert parse([text], date_format) == [mdy if date_format == "mdy" else dmy]


@pytest.mark.parametrize("date_format", DATE_FORMATS)
def test_a_column_mixing_every_format_parses_each_value_by_its_own_shape(date_format):
    expected = [mdy if date_format == "mdy" else dmy for _, mdy, dmy in CASES]
    assert parse([text for text, _, _ in CASES], date_format) == expected


@pytest.mark.parametrize(("date_format", "expected"),
                         [("mdy", utc(2014, 5, 11)), ("dmy", utc(2014, 11, 5))])
def test_date_format_settles_an_ambiguous_numeric_date(date_format, expected):
    assert parse(["05/11/2014", "05-11-2014"], date_format) == [expected, expected]


@pytest.mark.parametrize("date_format", DATE_FORMATS)
def test_iso_dates_are_always_year_month_day(date_format):
    assert parse(["2014-05-11"], date_format) == [utc(2014, 5, 11)]


def test_an_offset_is_converted_to_utc():
    assert parse(["1994-03-11T14:30:47-06:00"]) == [utc(1994, 3, 11, 20, 30, 47)]


@pytest.mark.parametrize(("text", "date_format"), [
    ("02/30/2014", "mdy"), ("30/02/2014", "dmy"), ("13/01/2014", "mdy"), ("01/13/2014", "dmy"),
    ("02/29/2014", "mdy"), ("2014-02-30", "mdy"), ("2014-13-01", "dmy"),
    ("February 30, 2014", "mdy"),
    ("31 April 2014", "dmy"), ("03/11/1994 24:00", "mdy"), ("03/11/1994 14:60", "mdy"),
    ("1994-03-11 14:30:61", "mdy"), ("03/11/1994 13:30pm", "mdy"), ("03/11/1994 0:30am", "mdy"),
    # chrono's leap second would roll over into the next day.
    ("1994-03-11 23:59:60", "mdy"), ("12/31/1994 23:59:60", "mdy"),
    ("1994-03-11T14:30:47+24:00", "mdy"),
])
def test_impossible_dates_and_times_are_null_never_rolled_over(text, date_format):
    assert parse([text], date_format) == [None]


def test_a_leap_year_day_parses():
    assert parse(["02/29/2012", "2012-02-29"]) == [utc(2012, 2, 29)] * 2


@pytest.mark.parametrize("text", [
    "garbage", "yesterday", "03/11/1994x", "1994-03-11 14:30 extra", "1994-03-11T", "03/11/1994 ",
    "03/11/94", "94-03-11", "-1994-03-11", "+1994-03-11", "03/11/-1994", "03/11/01994",
    "1994-03-1114:30", "03-11/1994", "03/11", "1994", "14:30", "2:30pm", "Marchember 11, 1994",
    "Mar. 11, 1994", "1994-03-11 2:30pm", "03/11/1994 14:30:47:00", "1994-03-11Z",
])
def test_anything_else_is_null(text):
    assert parse([text]) == [None]


def test_null_stays_null_and_failures_are_the_non_null_inputs_that_came_back_null():
    frame = pl.DataFrame({"t": ["03/11/1994", None, "nope"]}).with_columns(
        parsed=parse_times(pl.col("t")))
    failed = frame.select(pl.col("t").is_not_null() & pl.col("parsed").is_null()).to_series()
    assert frame["parsed"].to_list() == [MARCH_11, None, None]
    assert failed.to_list() == [False, False, True]


def test_an_all_null_or_empty_column_parses_to_nothing():
    assert parse([None, None]) == [None, None]
    assert parse([]) == []


def test_works_in_lazy_frames_and_keeps_the_column_name():
    out = (pl.LazyFrame({"subscribe_time": ["1994-03-11", "03/11/1994 2:30pm"], "n": [1, 2]})
           .with_columns(pl.col("subscribe_time").pipe(parse_times, "dmy")).collect())
    assert out.columns == ["subscribe_time", "n"]
    assert out["subscribe_time"].to_list() == [MARCH_11, utc(1994, 11, 3, 14, 30)]


@pytest.mark.parametrize("date_format", ["ymd", "MDY", "", None])
def test_an_unknown_date_format_raises(date_format):
    with pytest.raises(ValueError, match="date_format"):
        parse_times(pl.col("t"), date_format)


def test_format_hint_is_a_short_phrase_whose_examples_parse():
    hint = format_hint()
    assert hint.startswith("a date such as ")
    examples = ["1994-03-11", "1994-03-11T14:30:47-06:00", "03/11/1994 14:30", "03-11-1994 2:30pm",
                "March 11, 1994", "11 March 1994"]
    assert all(example in hint for example in examples)
    assert None not in parse(examples)


# Generated values: any time from 1001 to 9998, written in one of the accepted shapes with random
# padding, case, separator and offset, then parsed together in one column.
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


def pad(number: int, padded: bool) -> str:
    return f"{number:02d}" if padded else str(number)


def clock_12(t: datetime, seconds: bool, padded: bool, space: bool, upper: bool) -> str:
    suffix = "am" if t.hour < 12 else "pm"
    text = f"{pad(t.hour % 12 or 12, padded)}:{t.minute:02d}"
    text += f":{t.second:02d}" if seconds else ""
    return text + (" " if space else "") + (suffix.upper() if upper else suffix)


@st.composite
def written_times(draw, date_format: str):
    """(text, the UTC time it means) in one of the accepted shapes."""
    t = draw(st.datetimes(datetime(1001, 1, 1), datetime(9998, 12, 31))).replace(microsecond=0)
    padded, upper, space = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    sep = draw(st.sampled_from("/-"))
    first, second = (t.month, t.day) if date_format == "mdy" else (t.day, t.month)
    numeric = f"{pad(first, padded)}{sep}{pad(second, padded)}{sep}{t.year}"
    month = MONTHS[t.month - 1][:None if padded else 3]
    month = draw(st.sampled_from([str.upper, str.lower, str.title]))(month)
    offset_minutes = draw(st.integers(-14 * 4, 14 * 4)) * 15
    hours, minutes = divmod(abs(offset_minutes), 60)
    offset = f"{'-' if offset_minutes < 0 else '+'}{hours:02d}:{minutes:02d}"
    local = t + timedelta(minutes=offset_minutes)
    day, to_minute = t.replace(hour=0, minute=0, second=0), t.replace(second=0)
    shapes = [
        (f"{t:%Y-%m-%d}", day),
        (f"{t:%Y-%m-%d %H:%M}", to_minute),
        (f"{t:%Y-%m-%d}{'T' if space else ' '}{t:%H:%M:%S}", t),
        (f"{t:%Y-%m-%dT%H:%M:%S}Z", t),
        (f"{local:%Y-%m-%dT%H:%M:%S}{offset}", t),
        (f"{month} {pad(t.day, padded)}, {t.year}", day),
        (f"{month} {pad(t.day, padded)}, {t.year} {t:%H:%M}", to_minute),
        (f"{pad(t.day, padded)} {month} {t.year}", day),
        (numeric, day),
        (f"{numeric} {pad(t.hour, padded)}:{t:%M}", to_minute),
        (f"{numeric} {pad(t.hour, padded)}:{t:%M:%S}", t),
        (f"{numeric} {clock_12(t, False, padded, space, upper)}", to_minute),
        (f"{numeric} {clock_12(t, True, padded, space, upper)}", t),
    ]
    text, meant = draw(st.sampled_from(shapes))
    return text, meant.replace(tzinfo=timezone.utc)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), date_format=st.sampled_from(DATE_FORMATS))
def test_generated_times_in_every_shape_parse_to_what_they_mean(data, date_format):
    written = data.draw(st.lists(written_times(date_format), min_size=1, max_size=40))
    assert parse([text for text, _ in written], date_format) == [meant for _, meant in written]
