"""Email validation with exactly the semantics of the `email-validator` package (spec §3 "Values").

    check_emails(emails: pl.Series) -> pl.DataFrame

Input: a Utf8 series of raw cells (may contain nulls, surrounding whitespace).
Output: a frame with the same length and order, columns
    email_key   (Utf8): `validate_email(cell.strip(), check_deliverability=False).normalized.lower()`;
                        null when rejected
    email_error (Utf8): `str(exc)` of the package's EmailNotValidError; null when accepted
A null or empty (after trimming) cell is rejected with error "email is missing".

The package costs 20-40 µs per call, so values it would certainly accept, and whose normalized
form is just the input with the domain lower-cased, are decided by vectorised Polars expressions
(`fast_path`), and so are the common shapes of bad addresses whose message is certain
(`_REJECTS`). Every other distinct value goes through `email_validator.validate_email` itself,
so keys and messages are its own.
"""
import re

import email_validator
import polars as pl
from email_validator.rfc_constants import DNS_LABEL_LENGTH_LIMIT, EMAIL_MAX_LENGTH, LOCAL_PART_MAX_LENGTH

MISSING = "email is missing"

# Python's str.strip() removes every char with str.isspace(); Polars' default strip_chars uses
# Rust's narrower Unicode White_Space (it keeps e.g. \x1c-\x1f), so pass Python's set explicitly.
# (Spelled out: finding them with str.isspace over every code point costs 0.1 s at start-up;
# tests/test_emails.py checks the list against this Python.)
_PY_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004"
                  "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")

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


# Rejections decided without the package, for the shapes bad addresses mostly take. Each is
# the package's own message for every string of its shape, by the order of its checks
# (email_validator 2.4, syntax.py): split_email runs first, then the local part, then the
# domain. Every shape is ASCII, so the package's NFC and combining-character checks are no-ops,
# and has no quote or "<", so there is neither a quoted local part nor a display name.
# `tests/test_emails.py` checks each shape against the package on generated strings.
_ATEXT = r"A-Za-z0-9_+\-"  # a subset of the package's ATEXT, dot excluded (hyphen escaped:
# "[A-Za-z0-9_+-.]" would be a range from + to . and take in the comma)
_LOCAL = rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*"  # DOT_ATOM_TEXT accepts it
_ASCII = r"[\x20-\x7e]"
_REJECTS = (
    # split_email finds no @-sign (nor "<" or a full-width at-sign).
    (rf"^[{_ATEXT}.]+$", "An email address must have an @-sign."),
    # The local part is empty: checked before anything after the @-sign.
    (rf"^@{_ASCII}*$", "There must be something before the @-sign."),
    # A valid local part, then a space: the only character outside ATEXT_INTL_DOT.
    (rf"^[{_ATEXT}.]*(?: [{_ATEXT}.]*)+@{_ASCII}*$",
     "The email address contains invalid characters before the @-sign: SPACE."),
    # A local part of atext, not starting or ending with a dot, with two dots in a row.
    (rf"^[{_ATEXT}]+(?:\.+[{_ATEXT}]+)*\.{{2,}}[{_ATEXT}]+(?:\.+[{_ATEXT}]+)*@{_ASCII}*$",
     "An email address cannot have two periods in a row."),
    # A valid local part, and nothing after the @-sign.
    (rf"^{_LOCAL}@$", "There must be something after the @-sign."),
    # A valid local part, then a domain whose only bad character is "@" (within the length
    # limit, which the package checks first).
    (rf"^{_LOCAL}@@[A-Za-z0-9.@-]*$", "The part after the @-sign contains invalid characters: '@'."),
    # A valid local part, then one hostname label (at most 63 characters, no "--") and no dot.
    (rf"^{_LOCAL}@[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*$",
     "The part after the @-sign is not valid. It should have a period."),
)
# The package checks a domain's length and its labels' lengths before these messages.
_AFTER_LENGTH_CHECKS = frozenset(_REJECTS[i][1] for i in (5, 6))


def _rejected(v: pl.Expr) -> pl.Expr:
    """The package's message where the value has one of the shapes above, else null."""
    message = pl.lit(None, pl.Utf8)
    for pattern, text in reversed(_REJECTS):
        message = pl.when(v.str.contains(pattern)).then(pl.lit(text)).otherwise(message)
    domain_ok = (v.str.len_bytes() <= EMAIL_MAX_LENGTH) & ~v.str.contains(_LONG_LABEL_RE)
    return (pl.when(message.is_in(list(_AFTER_LENGTH_CHECKS)) & ~domain_ok)
            .then(pl.lit(None, pl.Utf8)).otherwise(message))


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
    # Vectorised result for fast and missing rows; the others are filled in below.
    missing = v.is_null() | (v == "")
    out = frame.select(
        email_key=pl.when("fast").then(v.str.to_lowercase()),
        email_error=pl.when(missing).then(pl.lit(MISSING)),
    )
    # The rest are few: the shapes of common bad addresses are rejected by expression, and
    # only what remains is de-duplicated (a unique() over a million mostly distinct strings
    # costs more than the fast path, but one package call per distinct value is the big cost,
    # and duplicates are common in imports).
    rest = (frame.with_row_index("i").filter(~pl.col("fast") & ~missing)
            .with_columns(rejected=_rejected(v)))
    if rest.is_empty():
        return out
    distinct = rest.filter(pl.col("rejected").is_null())["v"].unique().to_list()
    keys, errors = zip(*map(_validate, distinct)) if distinct else ((), ())
    results = pl.DataFrame({"v": distinct, "k": list(keys), "e": list(errors)},
                           schema={"v": pl.Utf8, "k": pl.Utf8, "e": pl.Utf8})
    rest = rest.join(results, on="v", how="left").with_columns(e=pl.coalesce("rejected", "e"))
    return out.with_columns(out["email_key"].scatter(rest["i"], rest["k"]),
                            out["email_error"].scatter(rest["i"], rest["e"]))
