"""Times (spec §3 "Values"): GreenArrow's date and time formats, parsed as Polars expressions.

Every accepted shape is one chrono format (Polars' `str.to_datetime` with `exact=True`). A failed
attempt costs about as much as a successful one, so each value is offered only to the few formats
its date kind and number of colons allow; an attempt on a masked-out (null) value is free.
"""
from functools import partial

import polars as pl

DATE_FORMATS = ("mdy", "dmy")
UTC = pl.Datetime("us", "UTC")

# chrono takes any year it can read (`94`, `-1994`, `+1994`) and lets `%d` run into what follows
# (`1994-03-1114:30`), so the date part must first have one of GreenArrow's shapes: 4-digit year,
# 1-2 digit day and month, then the end or a non-digit.
_DATE_SHAPE = (
    r"^(?:\d{4}-\d{1,2}-\d{1,2}"          # 1994-03-11
    r"|\d{1,2}-\d{1,2}-\d{4}"             # 03-11-1994
    r"|\d{1,2}/\d{1,2}/\d{4}"             # 03/11/1994
    r"|[A-Za-z]+ \d{1,2}, ?\d{4}"         # March 11, 1994 / Mar 11, 1994
    r"|\d{1,2} [A-Za-z]+ \d{4}"           # 11 March 1994
    r")(?:\D|$)"
)
# chrono reads second 60 as a leap second, which Polars rolls into the next minute (23:59:60 →
# 00:00:00 the next day); no valid value holds ":60" (minutes and offsets stop at 59).
_LEAP_SECOND = ":60"


def parse_times(expr: pl.Expr, date_format: str = "mdy") -> pl.Expr:
    """Text → `Datetime("us", "UTC")`; null where the text is null or has no accepted shape."""
    if date_format not in DATE_FORMATS:
        raise ValueError(f"date_format must be one of {', '.join(DATE_FORMATS)}, not {date_format!r}")
    # A batch function, because a plain expression would recompute the shared checks once per
    # format wherever Polars does not eliminate common subexpressions (eager `select`, at least).
    return expr.map_batches(partial(_parse, date_format=date_format), return_dtype=UTC,
                            is_elementwise=True)


def format_hint() -> str:
    """The accepted shapes in a phrase, for the reason of a failed row."""
    return ("a date such as 1994-03-11, 1994-03-11T14:30:47-06:00, 03/11/1994 14:30, "
            "03-11-1994 2:30pm, March 11, 1994 or 11 March 1994")


def _parse(values: pl.Series, date_format: str) -> pl.Series:
    value = pl.col("value")
    frame = pl.DataFrame({"value": values.cast(pl.String)}).select(
        pl.when(value.str.contains(_DATE_SHAPE) & ~value.str.contains(_LEAP_SECOND, literal=True))
        .then(value).alias("value"))
    frame = frame.with_columns(
        colons=value.str.count_matches(":", literal=True),
        iso=value.str.slice(4, 1) == "-",
        separator=value.str.extract(r"^\d{1,2}([-/])\d", 1),  # 03/11/1994 or 03-11-1994
    ).with_columns(
        # chrono has no optional literal; in an ISO value the only letter before the zone is the T.
        iso_value=pl.when("iso").then(value).str.replace("T", " ", literal=True),
        named=~pl.col("iso") & pl.col("separator").is_null(),  # March 11, 1994 or 11 March 1994
    )
    colons, iso_value, named = pl.col("colons"), pl.col("iso_value"), pl.col("named")
    attempts = [
        (iso_value, colons == 0, "%Y-%m-%d"),
        (iso_value, colons == 1, "%Y-%m-%d %H:%M"),
        (iso_value, colons == 2, "%Y-%m-%d %H:%M:%S%.f"),
        # %#z takes Z, +00, +0000 and +00:00 (whose colon is the third).
        (iso_value, colons.is_between(1, 2), "%Y-%m-%d %H:%M%#z"),
        (iso_value, colons.is_between(2, 3), "%Y-%m-%d %H:%M:%S%.f%#z"),
        (value, named & (colons == 0), "%B %d, %Y"),  # %B: any case, full or 3-letter name
        (value, named & (colons == 0), "%d %B %Y"),
        (value, named & (colons == 1), "%B %d, %Y %H:%M"),
    ]
    day_month = "%m{0}%d" if date_format == "mdy" else "%d{0}%m"
    for sep in "/-":
        date, numeric = f"{day_month.format(sep)}{sep}%Y", pl.col("separator") == sep
        attempts += [
            (value, numeric & (colons == 0), date),
            # %I takes 1 or 2 digits and %p any case; a space in a format matches none or some.
            (value, numeric & (colons == 1), f"{date} %H:%M"),
            (value, numeric & (colons == 1), f"{date} %I:%M %p"),
            (value, numeric & (colons == 2), f"{date} %H:%M:%S"),
            (value, numeric & (colons == 2), f"{date} %I:%M:%S %p"),
        ]
    parsed = frame.select(pl.coalesce(*(_attempt(*attempt) for attempt in attempts))).to_series()
    return parsed.alias(values.name)


def _attempt(value: pl.Expr, rows: pl.Expr, fmt: str) -> pl.Expr:
    parsed = pl.when(rows).then(value).str.to_datetime(
        fmt, time_unit="us", strict=False, exact=True, cache=False)
    # With an offset Polars answers in UTC already; a time without one is UTC by the spec.
    return parsed.dt.convert_time_zone("UTC") if "%#z" in fmt else parsed.dt.replace_time_zone("UTC")
