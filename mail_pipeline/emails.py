"""Email validation with exactly the semantics of the `email-validator` package (spec §3 "Values").

    check_emails(emails: pl.Series) -> pl.DataFrame

Input: a Utf8 series of raw cells (may contain nulls, surrounding whitespace).
Output: a frame with the same length and order, columns
    email_key   (Utf8): `validate_email(cell.strip(), check_deliverability=False).normalized.lower()`;
                        null when rejected
    email_error (Utf8): `str(exc)` of the package's EmailNotValidError; null when accepted
A null or empty (after trimming) cell is rejected with error "email is missing".

The package costs 20-40 µs per call, so only values it would certainly accept, and whose
normalized form is just the input with the domain lower-cased, are decided by vectorised
Polars expressions (`fast_path`). Every other distinct value, including every rejection,
goes through `email_validator.validate_email` itself, so keys and messages are its own.
"""
import re
import sys

import email_validator
import polars as pl
from email_validator.rfc_constants import DNS_LABEL_LENGTH_LIMIT, EMAIL_MAX_LENGTH, LOCAL_PART_MAX_LENGTH

MISSING = "email is missing"

# Python's str.strip() removes every char with str.isspace(); Polars' default strip_chars uses
# Rust's narrower Unicode White_Space (it keeps e.g. \x1c-\x1f), so pass Python's set explicitly.
_PY_WHITESPACE = "".join(filter(str.isspace, map(chr, range(sys.maxunicode + 1))))

# Local part: dot-atom of [A-Za-z0-9_+-] plus the Latin-1 letters À-Ö Ø-ö ø-ÿ (category L,
# NFC-stable, never combine with a neighbour, same lower() in Python and Rust), so the package
# keeps it as-is (ASCII dot-atom, or intl dot-atom that NFC leaves unchanged). The letters are
# here because such names (josé, zoë) are the costliest package calls (~36 µs each).
# Domain: ASCII labels of alphanumerics with single inner hyphens and an alphabetic TLD. No "--"
# anywhere, so no Punycode ("xn--") or R-LDH cases and no IDNA call; the package only lower-cases
# such a domain (UTS-46 remap), and so does our final lower().
_LOCAL_CHARS = "A-Za-z0-9_+À-ÖØ-öø-ÿ-"
_FAST_RE = (rf"^[{_LOCAL_CHARS}]+(?:\.[{_LOCAL_CHARS}]+)*"
            r"@(?:[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\.)+[A-Za-z]+$")
# A domain label longer than the DNS limit. Its first char follows "@" or "."; a match inside
# the local part would need a local part longer than LOCAL_PART_MAX_LENGTH, already excluded.
_LONG_LABEL_RE = rf"[.@][A-Za-z0-9-]{{{DNS_LABEL_LENGTH_LIMIT + 1}}}"


def _special_use_re() -> str | None:
    """Regex for "domain == d or domain ends with .d", d in the package's special-use list."""
    # Read at call time: the package documents the list as changeable by its users. It compares
    # d with the lower-cased domain, so only lower-case [a-z0-9.-] entries can ever match; each
    # letter is matched in either case explicitly (no (?i): Unicode folding would match "K").
    names = [d for d in email_validator.SPECIAL_USE_DOMAIN_NAMES if re.fullmatch(r"[a-z0-9.-]+", d)]
    alts = ["".join(f"[{c}{c.upper()}]" if c.isalpha() else re.escape(c) for c in d) for d in names]
    return f"[.@](?:{'|'.join(alts)})$" if alts else None


def _fast(v: pl.Expr) -> pl.Expr:
    special = _special_use_re()
    return (
        v.str.contains(_FAST_RE)
        # UTF-8 bytes, as the package counts them. The domain (ASCII) is then at most
        # 254 - 2 = 252 octets, under DOMAIN_MAX_LENGTH (253), so needs no check of its own.
        & (v.str.len_bytes() <= EMAIL_MAX_LENGTH)
        # Only enforced by the package in strict mode; we stay stricter (and need it for
        # _LONG_LABEL_RE). str.find gives a byte offset, at least the char count.
        & (v.str.find("@", literal=True) <= LOCAL_PART_MAX_LENGTH)
        & ~v.str.contains(_LONG_LABEL_RE)
        & (~v.str.contains(special) if special else True)
    ).fill_null(False)


def fast_path(trimmed: pl.Series) -> pl.Series:
    """True where the package certainly accepts the trimmed value, with key `value.lower()`."""
    return pl.select(_fast(pl.lit(trimmed, dtype=pl.Utf8))).to_series()


def _validate(value: str) -> tuple[str | None, str | None]:
    try:
        return email_validator.validate_email(value, check_deliverability=False).normalized.lower(), None
    except email_validator.EmailNotValidError as exc:
        return None, str(exc)


def check_emails(emails: pl.Series) -> pl.DataFrame:
    """Validate each cell; see the module docstring for the exact contract."""
    v = pl.col("v")
    frame = pl.DataFrame({"v": emails.cast(pl.Utf8).str.strip_chars(_PY_WHITESPACE)})
    frame = frame.with_columns(fast=_fast(v))
    # Vectorised result for fast and missing rows; the slow rows are filled in below.
    missing = v.is_null() | (v == "")
    out = frame.select(
        email_key=pl.when("fast").then(v.str.to_lowercase()),
        email_error=pl.when(missing).then(pl.lit(MISSING)),
    )
    # Only the few remaining rows are de-duplicated: a unique() over a million mostly distinct
    # strings costs more than the fast path, but one package call per distinct value is the
    # big cost, and duplicates are common in imports.
    slow = frame.with_row_index("i").filter(~pl.col("fast") & ~missing)
    if slow.height:
        distinct = slow["v"].unique().to_list()
        keys, errors = zip(*map(_validate, distinct))
        results = pl.DataFrame({"v": distinct, "k": list(keys), "e": list(errors)},
                               schema={"v": pl.Utf8, "k": pl.Utf8, "e": pl.Utf8})
        slow = slow.join(results, on="v", how="left")
        out = out.with_columns(out["email_key"].scatter(slow["i"], slow["k"]),
                               out["email_error"].scatter(slow["i"], slow["e"]))
    return out
