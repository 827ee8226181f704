"""Validation (spec §3 "Values" and the first categories of "Fate"): every record read becomes a
valid row, a `failed` row with its reason, or a `skipped_duplicate` row. Nothing is dropped."""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl

from mail_pipeline.emails import check_emails
from mail_pipeline.mapping import Mapping
from mail_pipeline.reading import Records
from mail_pipeline.values import STATUS_WORDS, custom_fields_json, json_objects, split_status


class ParsedRow(pa.DataFrameModel):
    """What a usable row must satisfy; each failed check becomes that row's reason."""

    email_key: str = pa.Field(nullable=False)
    status: str = pa.Field(nullable=True, isin=STATUS_WORDS)
    attributes_ok: bool = pa.Field(nullable=True, eq=True)


class ValidRow(pa.DataFrameModel):
    """The validated frame handed to the merge: one row per subscriber key."""

    # Uniqueness of `email` holds by construction (deduplication); checking it again here
    # would cost a second pass over a million strings.
    row: int = pa.Field(ge=1)
    email: str = pa.Field(nullable=False)
    name: str = pa.Field(nullable=True)
    subscriber_status: str = pa.Field(nullable=True)
    subscription_status: str = pa.Field(nullable=True)
    attributes: str = pa.Field(nullable=True)
    custom_fields: str = pa.Field(nullable=True)


# Checked in this order; a row's reason is its first failure.
_PRIORITY = {"email_key": 0, "status": 1, "attributes_ok": 2}

FAILED_SCHEMA = {"row": pl.Int64, "line": pl.Int64, "cells": pl.List(pl.String), "error": pl.String}


@dataclass(frozen=True)
class Validated:
    valid: pl.DataFrame       # ValidRow
    failed: pl.DataFrame      # FAILED_SCHEMA: the record as it came and the reason
    duplicates: pl.DataFrame  # row, email
    number_of_records: int


def _cell(index: int) -> pl.Expr:
    """A trimmed cell, with an empty one meaning no value."""
    text = pl.col(f"c{index}").str.strip_chars()
    return pl.when(text != "").then(text)


def parse(records: Records, mapping: Mapping) -> pl.DataFrame:
    """Records → one typed column per field (trimmed, empty = null) plus the checks' inputs."""
    fields = mapping.fields
    frame = records.rows.select(
        "row",
        _cell(fields["email"]).alias("email"),
        (_cell(fields["name"]) if "name" in fields else pl.lit(None, pl.String)).alias("name"),
        (_cell(fields["status"]) if "status" in fields else pl.lit(None, pl.String)).alias("status"),
        (_cell(fields["attributes"]) if "attributes" in fields else pl.lit(None, pl.String))
        .alias("attributes"),
        *[_cell(i).alias(f"custom:{name}") for name, i in mapping.custom.items()],
    )
    custom = [f"custom:{name}" for name in mapping.custom]
    frame = frame.with_columns(
        *split_status(pl.col("status")),
        pl.col("status").str.to_lowercase(),
        custom_fields_json({c: c.removeprefix("custom:") for c in custom}),
    ).drop(custom)
    # The JSON check runs in DuckDB, which releases the GIL, so it overlaps the email check,
    # whose costly part is email-validator's Python code.
    with ThreadPoolExecutor(max_workers=1) as pool:
        attributes_ok = pool.submit(json_objects, frame["attributes"])
        emails = check_emails(frame["email"])
        attributes_ok = attributes_ok.result().alias("attributes_ok").to_frame()
    return pl.concat([frame, emails, attributes_ok], how="horizontal")


def reasons(parsed: pl.DataFrame, columns: list[str], mapping: Mapping) -> pl.DataFrame:
    """Run the Pandera checks and give each failing row (by position) its reason."""
    try:
        ParsedRow.validate(parsed.select("email_key", "status", "attributes_ok"), lazy=True)
        return pl.DataFrame(schema={"index": pl.UInt32, "error": pl.String})
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases.filter(pl.col("index").is_not_null())
    status_column = columns[mapping.fields["status"]] if "status" in mapping.fields else "status"
    cases = (
        cases.select(pl.col("index").cast(pl.UInt32), "column", "failure_case")
        .with_columns(pl.col("column").replace_strict(_PRIORITY, return_dtype=pl.Int8).alias("rank"))
        .sort("index", "rank").unique("index", keep="first", maintain_order=True)
        .join(parsed.with_row_index("index").select("index", "email_error"), on="index")
    )
    return cases.select("index", pl.when(pl.col("column") == "email_key").then(pl.col("email_error"))
        .when(pl.col("column") == "status").then(pl.format(
            "invalid status '{}' in column '" + status_column.replace("{", "{{").replace("}", "}}")
            + "': must be a subscriber status (enabled, disabled, blocklisted) or a subscription"
            " status", pl.col("failure_case")))
        .otherwise(pl.lit("attributes is not a JSON object")).alias("error"))


def validate(records: Records, columns: list[str], mapping: Mapping) -> Validated:
    """Parse, check and deduplicate the records; the first occurrence of an email wins."""
    parsed = parse(records, mapping)
    failures = reasons(parsed, columns, mapping)
    # Failures are few: mark them by position rather than joining the whole frame.
    is_failed = pl.int_range(pl.len(), dtype=pl.UInt32).is_in(failures["index"].implode())
    ok = parsed.filter(~is_failed).select(
        "row", pl.col("email_key").alias("email"), "name", "subscriber_status",
        "subscription_status", "attributes", "custom_fields")
    first = ok["email"].is_first_distinct()
    valid, duplicates = ok.filter(first), ok.filter(~first).select("row", "email")
    failed_rows = (records.rows.with_row_index("index").join(failures, on="index")
                   if failures.height else records.rows.clear().with_columns(error=pl.lit(None, pl.String)))
    failed = pl.concat([
        failed_rows.select(
            "row", pl.lit(None, pl.Int64).alias("line"),
            pl.concat_list(pl.col(f"c{i}").fill_null("") for i in range(len(columns))).alias("cells"),
            "error"),
        records.rejects.select(pl.lit(None, pl.Int64).alias("row"), "line", "cells", "error"),
    ]).cast(FAILED_SCHEMA)
    return Validated(ValidRow.validate(valid), failed, duplicates, records.count)
