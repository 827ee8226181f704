"""check_emails must agree exactly with email-validator, and take the fast path for plain addresses."""
import string
import unicodedata

import email_validator
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mail_pipeline.emails import MISSING, check_emails, fast_path


def reference(cell):
    """The contract, spelled out with one package call per cell."""
    value = None if cell is None else cell.strip()
    if not value:
        return None, MISSING
    try:
        return email_validator.validate_email(value, check_deliverability=False).normalized.lower(), None
    except email_validator.EmailNotValidError as exc:
        return None, str(exc)


def run(cells):
    out = check_emails(pl.Series(cells, dtype=pl.Utf8))
    assert out.columns == ["email_key", "email_error"]
    assert out.dtypes == [pl.Utf8, pl.Utf8]
    return list(out.iter_rows())


def package_error(value):
    with pytest.raises(email_validator.EmailNotValidError) as exc:
        email_validator.validate_email(value, check_deliverability=False)
    return str(exc.value)


def test_examples():
    idn = email_validator.validate_email("josé.1@example.com", check_deliverability=False).normalized.lower()
    assert run(["j ane@example.com", "  JOHN@Example.COM ", "josé.1@example.com", "", None, " \t "]) == [
        (None, package_error("j ane@example.com")),
        ("john@example.com", None),
        (idn, None),
        (None, MISSING), (None, MISSING), (None, MISSING),
    ]
    assert "invalid characters" in package_error("j ane@example.com")


def test_order_and_length_with_duplicates():
    cells = ["b@x.com", "bad", "A@X.com", None, "bad", "b@x.com", "a@bücher.de", "a@bücher.de", ""]
    assert run(cells) == [reference(c) for c in cells]
    assert run([]) == []
    assert run([None, None]) == [(None, MISSING)] * 2


def test_strip_is_pythons():
    # str.strip() removes \x1c-\x1f and U+3000 too; Rust's trim() does not remove \x1c.
    assert run(["\x1cA@B.com\u3000", "\x85a@b.com\xa0"]) == [("a@b.com", None)] * 2


def test_fast_path_is_taken_for_plain_addresses(monkeypatch):
    calls = []
    real = email_validator.validate_email
    monkeypatch.setattr(email_validator, "validate_email", lambda v, **kw: calls.append(v) or real(v, **kw))
    plain = [f"  User.{i}_x+Tag@Mail-{i % 7}.Example.COM " for i in range(1000)] + ["zoë.åsa@gmail.com"]
    assert run(plain) == [(c.strip().lower(), None) for c in plain]
    assert calls == []
    # Everything else is a package call, once per distinct trimmed value, except the
    # vectorised rejections ("bad" has no @-sign).
    run(["a@bücher.de", " a@bücher.de", "bad", "bad ", "x@y.local"])
    assert sorted(calls) == ["a@bücher.de", "x@y.local"]


def test_special_use_list_is_read_at_call_time(monkeypatch):
    assert run(["a@b.test", "a@x.ONION"]) == [reference("a@b.test"), reference("a@x.ONION")]
    # The package compares entries with the lower-cased domain, so "Foo.com" never matches.
    monkeypatch.setattr(email_validator, "SPECIAL_USE_DOMAIN_NAMES", ["example.com", "Foo.com"])
    cells = ["a@example.com", "a@sub.EXAMPLE.com", "a@b.test", "a@xexample.com", "a@foo.com"]
    assert fast_path(pl.Series(cells)).to_list() == [False, False, True, True, True]
    assert run(cells) == [reference(c) for c in cells]
    assert run(cells)[-1] == ("a@foo.com", None)


def test_fast_local_part_characters_match_package():
    # The fast path admits these non-ASCII letters in the local part: each must be kept as-is
    # by the package and lower-case the same way in Rust and Python, and none may compose.
    latin = [c for c in map(chr, range(0xC0, 0x100)) if c not in "×÷"]
    chars = latin + list(string.ascii_letters + string.digits + "_+-")
    cells = [f"{c}x.{c}@Example.com" for c in chars]
    assert fast_path(pl.Series(cells)).all()
    assert run(cells) == [reference(c) for c in cells]
    assert all(unicodedata.normalize("NFC", a + b) == a + b for a in chars for b in chars)


def test_lengths_at_the_limits():
    label = "a" * 63
    cells = ["l" * 64 + "@x.com", "l" * 65 + "@x.com", f"a@{label}.com", f"a@{label}b.com",
             "a@" + ".".join([label] * 3) + ".abcdefghijklmnopqrstuvwxyz" + "z" * 32,
             "abc@" + ".".join([label] * 3) + "." + "z" * 58, "é" * 64 + "@x.com", "é" * 33 + "@x.com"]
    assert run(cells) == [reference(c) for c in cells]


def mutate(email, how):
    local, _, domain = email.rpartition("@")
    return {
        "upper": email.upper(),
        "pad": f"  {email}\t",
        "double_dot": email.replace(".", "..", 1),
        "dot_at": f"{local}.@{domain}",
        "hyphen_label": f"{local}@" + domain.replace(".", "-.", 1),
        "dashes": f"{local}@ab--{domain}",
        "punycode": f"{local}@xn--{domain}",
        "local64": f"{(local * 64)[:64]}@{domain}",
        "local65": f"{(local * 65)[:65]}@{domain}",
        "long_label": f"{local}@{'q' * 64}.{domain}",
        "special": f"{local}@{domain.rsplit('.', 1)[0]}.{how[1]}",
        "no_tld": f"{local}@{domain.split('.')[0]}",
        "digit_tld": f"{local}@{domain}9",
        "idn": f"{local}é@bÜcher.{domain}",
        "two_at": f"{local}@@{domain}",
    }[how[0]]


ALPHABET = string.ascii_letters + string.digits + '.@-_+ "' + "éÉüßøÿζжあ\u0301\u200b"
special_tlds = st.sampled_from(["local", "test", "TEST", "onion", "arpa", "invalid", "localhost", "com"])
mutations = st.tuples(st.sampled_from([
    "upper", "pad", "double_dot", "dot_at", "hyphen_label", "dashes", "punycode", "local64", "local65",
    "long_label", "special", "no_tld", "digit_tld", "idn", "two_at"]), special_tlds)
cells = st.one_of(
    st.none(),
    st.emails(),
    st.text(alphabet=ALPHABET, max_size=30),
    st.builds(lambda a, b, tld: f"{a}@{b}.{tld}", st.text(ALPHABET, max_size=12),
              st.text(ALPHABET, max_size=12), special_tlds),
    st.builds(mutate, st.emails(), mutations),
    st.builds(mutate, st.builds(mutate, st.emails(), mutations), mutations),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(cells, max_size=12))
def test_agrees_with_email_validator(values):
    values = values + values[:2]  # some duplicates
    assert run(values) == [reference(v) for v in values]


# Strings built from the characters the vectorised rejections look at, plus long runs that reach
# the length limits: every one must get the package's own message.
SHAPE_PARTS = st.sampled_from(["a", "Z", "0", "_", "+", "-", ".", "..", "@", "@@", " ", "!", "é",
                               "x" * 63, "y" * 64, "com", "-b", "<", '"', ",", "/"])
shaped = st.lists(SHAPE_PARTS, min_size=1, max_size=10).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(shaped, min_size=1, max_size=20))
def test_vectorised_rejections_agree_with_email_validator(values):
    assert run(values) == [reference(v) for v in values]


def test_common_bad_addresses_need_no_package_call(monkeypatch):
    calls = []
    real = email_validator.validate_email
    monkeypatch.setattr(email_validator, "validate_email", lambda v, **kw: calls.append(v) or real(v, **kw))
    assert run(["x, y@x.com", "a,b c@x.com"]) == [reference("x, y@x.com"), reference("a,b c@x.com")]
    bad = ["not-an-email", "ada.smith1@", "@example.com", "ada.smith1 x@example.com",
           "ada.smith1@@example.com", "ada.smith1@example", "ada.smith1..x@example.com"]
    expected = [(None, package_error(v)) for v in bad]
    calls.clear()
    assert run(bad) == expected
    assert calls == []


def test_the_spelled_out_whitespace_is_pythons_isspace():
    import sys
    from mail_pipeline.emails import _PY_WHITESPACE
    assert _PY_WHITESPACE == "".join(filter(str.isspace, map(chr, range(sys.maxunicode + 1))))
