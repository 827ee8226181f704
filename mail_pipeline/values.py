"""Values (spec §3 "Values"): statuses in both vocabularies, and JSON attributes."""
import ipaddress
import json
import re

import duckdb
import polars as pl

SUBSCRIBER_STATUSES = ("enabled", "disabled", "blocklisted")
# GreenArrow's `active` is confirmed and `scomp` is complained.
SUBSCRIPTION_STATUSES = {
    "unconfirmed": "unconfirmed", "confirmed": "confirmed", "active": "confirmed",
    "unsubscribed": "unsubscribed", "bounced": "bounced", "deactivated": "deactivated",
    "complained": "complained", "scomp": "complained",
}
STATUS_WORDS = list(SUBSCRIBER_STATUSES) + list(SUBSCRIPTION_STATUSES)


def split_status(status: pl.Expr) -> list[pl.Expr]:
    """A `status` cell → `subscriber_status` and `subscription_status` (one of them, or neither)."""
    word = status.str.to_lowercase()
    return [
        pl.when(word.is_in(SUBSCRIBER_STATUSES)).then(word).alias("subscriber_status"),
        word.replace_strict(SUBSCRIPTION_STATUSES, default=None, return_dtype=pl.String)
        .alias("subscription_status"),
    ]


def _duckdb(values: pl.Series, query: str) -> pl.DataFrame:
    """Run `query` over a one-column frame `frame(v)` in a throwaway DuckDB (vectorised, and off
    the GIL)."""
    frame = pl.DataFrame({"v": values})  # noqa: F841 (the query reads it by name)
    con = duckdb.connect()
    try:
        return con.sql(query).pl()
    finally:
        con.close()



def json_objects(values: pl.Series) -> pl.Series:
    """True where the text is a JSON object (RFC 8259, no repeated top-level key), False where
    it is not, null where there is none."""
    # Attribute cells repeat a lot (the same few keys and values): each distinct text is
    # parsed once.
    distinct = values.drop_nulls().unique()
    if distinct.len() < values.len() // 2:
        ok = _json_objects(distinct)
        return (values.to_frame("v").join(pl.DataFrame({"v": distinct, "ok": ok}), on="v",
                                         how="left", maintain_order="left")["ok"])
    return _json_objects(values)


def _json_objects(values: pl.Series) -> pl.Series:
    checked = _duckdb(
        values,
        # json_keys parses once: null for text that is not JSON, [] for non-objects.
        "SELECT CASE WHEN v IS NULL THEN NULL ELSE coalesce(starts_with(ltrim(v), '{')"
        " AND len(k) = len(list_distinct(k)), false) END AS ok,"
        # DuckDB's parser also takes NaN, Infinity and trailing commas; the few values
        # that may hold one are checked again by Python's strict parser.
        " ok AND (contains(v, 'NaN') OR contains(v, 'Inf') OR regexp_matches(v, ',\\s*[}\\]]'))"
        " AS suspect FROM (SELECT v, try(json_keys(v)) AS k FROM frame)")
    # Nesting deeper than attributes ever need breaks readers downstream (Python's json stops
    # near 1,000 levels): only texts with that many brackets at all are measured.
    deep = values.str.count_matches(r"[\[{]", literal=False) > MAX_DEPTH
    suspects = values.filter(checked["suspect"].fill_null(False) | deep.fill_null(False)).unique()
    if suspects.is_empty():
        return checked["ok"]
    strict = {text: _strict_object(text) for text in suspects.to_list()}
    rechecked = values.replace_strict(strict, default=True, return_dtype=pl.Boolean)
    return pl.Series("ok", checked["ok"] & rechecked)


def _refuse(token: str):
    raise ValueError(f"not JSON: {token}")


MAX_DEPTH = 64
_SPECIAL = re.compile(r'[\[\]{}"\\]')


def _strict_object(text: str) -> bool:
    if depth(text) > MAX_DEPTH:
        return False
    try:
        return isinstance(json.loads(text, parse_constant=_refuse), dict)
    except ValueError:
        return False


def depth(text: str) -> int:
    """How deep brackets nest outside strings, in one pass over the characters that matter (a
    regex taking strings out first is quadratic on an unterminated string of escapes)."""
    level = deepest = 0
    in_string, skip = False, -1
    for found in _SPECIAL.finditer(text):
        at, char = found.start(), found.group()
        if at == skip:
            continue
        if in_string:
            if char == "\\":
                skip = at + 1  # the escaped character, whatever it is
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            level += 1
            deepest = max(deepest, level)
        elif char in "]}":
            level -= 1
    return deepest


def custom_fields_json(columns: dict[str, str]) -> pl.Expr:
    """Custom field columns (column → field name) → one JSON object per row, leaving out empty
    cells (no value)."""
    if not columns:
        return pl.lit(None, dtype=pl.String).alias("custom_fields")
    # json_encode of a one-field struct gives {"name":"value"}; strip the braces to get a member.
    members = [
        pl.when(pl.col(c).is_not_null())
        .then(pl.struct(pl.col(c).alias(name)).struct.json_encode().str.slice(1).str.strip_suffix("}"))
        for c, name in columns.items()
    ]
    joined = pl.concat_str(members, separator=",", ignore_nulls=True)
    return pl.when(joined != "").then(pl.format("{{{}}}", joined)).alias("custom_fields")


# A tag list: `,`, `;` or `|` separated; a tag in double quotes may hold a separator (Mailchimp
# writes TAGS as `"VIP","Early, bird"`).
_TAG = r'"[^"]*"|[^,;|"]+'


def parse_tags(cell: pl.Expr) -> pl.Expr:
    """A tags cell → sorted distinct tags, or null when it holds none."""
    tag = pl.element().str.strip_chars().str.strip_chars('"').str.strip_chars()
    tags = cell.str.extract_all(_TAG).list.eval(tag.filter(tag != "").unique().sort())
    return pl.when(tags.list.len() > 0).then(tags)


def ip_addresses(values: pl.Series) -> pl.Series:
    """True where the text is an IPv4 or IPv6 address, null where there is none. Checked by
    Python's `ipaddress` once per distinct value (a file holds few distinct IPs per row count)."""
    distinct = values.drop_nulls().unique()
    verdicts = {text: _is_ip(text) for text in distinct.to_list()}
    return values.replace_strict(verdicts, default=None, return_dtype=pl.Boolean)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False



def json_tag_lists(values: pl.Series) -> pl.Series:
    """Tags written as a JSON array (an export's `tags`) → sorted distinct tags, null for none."""
    return _duckdb(values, """
        SELECT CASE WHEN len(t) > 0 THEN t END AS tags FROM (
          SELECT list_sort(list_distinct(list_filter(list_transform(
                   try(from_json(v, '["VARCHAR"]')), lambda x: trim(x)), lambda x: x != ''))) AS t
          FROM frame)""")["tags"].cast(pl.List(pl.String))


_STATUS_LIST = "[" + ", ".join(f"'{s}'" for s in dict.fromkeys(SUBSCRIPTION_STATUSES.values())) + "]"


def memberships(values: pl.Series) -> pl.DataFrame:
    """An export's `lists` cell, a JSON object of list name → subscription status, as `lists`
    (re-serialised JSON, null for none) and `lists_ok` (null where there is no cell)."""
    return _duckdb(values, f"""
        SELECT CASE WHEN cardinality(m) > 0 THEN to_json(m)::VARCHAR END AS lists,
               CASE WHEN v IS NOT NULL THEN m IS NOT NULL AND coalesce(list_bool_and(list_transform(
                    map_entries(m), lambda e: e.key != '' AND e.value IS NOT NULL
                    AND list_contains({_STATUS_LIST}, e.value))), true)
               END AS lists_ok
        FROM (SELECT v, try(try_cast(json(v) AS MAP(VARCHAR, VARCHAR))) AS m FROM frame)""")
