"""Times (spec §3 "Values"): GreenArrow's date and time formats, parsed as Polars expressions.

Every accepted shape is one chrono format (Polars' `str.to_datetime` with `exact=True`). A failed
attempt costs about as much as a successful one, so a few cheap checks first route each value to
the one format its shape allows; an attempt on a masked-out (null) value costs nothing.
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
        raise ValueError(
            f"date_format must be one of {', '.join(DATE_FORMATS)}, not {date_format!r}")
    # A batch function, because as one plain expression the routing checks would be recomputed
    # for every format wherever Polars does not eliminate common subexpressions (eager `select`).
    return expr.map_batches(partial(_parse, date_format=date_format), return_dtype=UTC,
                            is_elementwise=True)


def format_hint() -> str:
    """The accepted shapes in a phrase, for the reason of a failed row."""
    return ("a date such as 1994-03-11, 1994-03-11T14:30:47-06:00, 03/11/1994 14:30, "
            "03-11-1994 2:30pm, March 11, 1994 or 11 March 1994")


def _parse(values: pl.Series, date_format: str) -> pl.Series:
    attempts = (_attempt(text, rows, fmt) for text, rows, fmt in _formats(date_format))
    parsed = _routes(values.cast(pl.String)).select(pl.coalesce(*attempts))
    return parsed.to_series().alias(values.name)


def _routes(values: pl.Series) -> pl.DataFrame:
    """The values (null unless the date part has an accepted shape) and what routes each one."""
    value = pl.col("value")
    usable = value.str.contains(_DATE_SHAPE) & ~value.str.contains(_LEAP_SECOND, literal=True)
    return pl.DataFrame({"value": values}).select(value=pl.when(usable).then(value)).with_columns(
        iso=value.str.slice(4, 1) == "-",
        separator=value.str.extract(r"^\d{1,2}([-/])\d", 1),      # 03/11/1994 or 03-11-1994
        colons=value.str.count_matches(":", literal=True),
        fraction=value.str.contains(".", literal=True),
        offset=value.str.contains(r":\d\d(?:\.\d+)? ?[+-]"),      # 14:30:47-06:00, 14:30 +0000
        twelve_hour=value.str.contains(r"[AaPp][Mm]$"),
    ).with_columns(
        # chrono has no optional literal; in an ISO value the only T is the one before the time.
        # A final Z is plain UTC, which the naive formats read several times faster than %#z.
        iso_value=pl.when("iso").then(
            pl.when(pl.col("colons") > 0)
            .then(value.str.replace("T", " ", literal=True)
                  .str.strip_suffix("Z").str.strip_suffix("z"))
            .otherwise(value)),
    )


def _formats(date_format: str) -> list[tuple[pl.Expr, pl.Expr, str]]:
    """(text, rows, format) for every accepted shape; a value is offered to one format, or to two
    that a cheap check cannot tell apart."""
    value, iso_value, colons = pl.col("value"), pl.col("iso_value"), pl.col("colons")
    iso, offset, fraction = pl.col("iso"), pl.col("offset"), pl.col("fraction")
    naive_iso = iso & ~offset
    named = ~iso & pl.col("separator").is_null()                # March 11, 1994 or 11 March 1994
    formats = [
        (iso_value, naive_iso & (colons == 0), "%Y-%m-%d"),
        (iso_value, naive_iso & (colons == 1), "%Y-%m-%d %H:%M"),
        # Without %.f, Polars reads zero-padded values on its own fast path, several times faster.
        (iso_value, naive_iso & (colons == 2) & ~fraction, "%Y-%m-%d %H:%M:%S"),
        (iso_value, naive_iso & (colons == 2) & fraction, "%Y-%m-%d %H:%M:%S%.f"),
        # %#z takes +00, +0000 and +00:00 (whose colon is the third).
        (iso_value, offset & colons.is_between(1, 2), "%Y-%m-%d %H:%M%#z"),
        (iso_value, offset & colons.is_between(2, 3), "%Y-%m-%d %H:%M:%S%.f%#z"),
        # %B takes a full or 3-letter month name in any case.
        (value, named & (colons == 0), "%B %d, %Y"),
        (value, named & (colons == 0), "%d %B %Y"),
        (value, named & (colons == 1), "%B %d, %Y %H:%M"),
    ]
    day_month = "%m{0}%d" if date_format == "mdy" else "%d{0}%m"
    for sep in "/-":
        date, numeric = f"{day_month.format(sep)}{sep}%Y", pl.col("separator") == sep
        clock_24, clock_12 = numeric & ~pl.col("twelve_hour"), numeric & pl.col("twelve_hour")
        formats += [
            (value, clock_24 & (colons == 0), date),
            (value, clock_24 & (colons == 1), f"{date} %H:%M"),
            (value, clock_24 & (colons == 2), f"{date} %H:%M:%S"),
            # %I takes 1 or 2 digits and %p any case; a space in a format matches none or some.
            (value, clock_12 & (colons == 1), f"{date} %I:%M %p"),
            (value, clock_12 & (colons == 2), f"{date} %I:%M:%S %p"),
        ]
    return formats


def _attempt(text: pl.Expr, rows: pl.Expr, fmt: str) -> pl.Expr:
    parsed = pl.when(rows).then(text).str.to_datetime(
        fmt, time_unit="us", strict=False, exact=True, cache=False)
    # With an offset Polars answers in UTC already; a time without one is UTC by the spec.
    if "%#z" in fmt:
        return parsed.dt.convert_time_zone("UTC")
    return parsed.dt.replace_time_zone("UTC")

