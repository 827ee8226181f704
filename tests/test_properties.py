"""Properties of every import, on generated files (hypothesis)."""
import csv
import io
import os
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import query, run_import

EMAILS = st.one_of(
    st.sampled_from(["a@example.com", "A@Example.com ", "b@example.org", "bad@", "c@@x.com", "",
                     "josé@example.com", " d@example.net", "e@example.com"]),
    st.emails().map(str),
)
CELLS = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
STATUSES = st.sampled_from(["", "enabled", "disabled", "blocklisted", "confirmed", "active", "nope"])
ATTRIBUTES = st.sampled_from(["", '{"a": 1}', '{"a": null, "b": [1]}', "{bad", "[1]", '{"a": 2}'])
ROWS = st.lists(st.tuples(EMAILS, CELLS, STATUSES, ATTRIBUTES), max_size=25)


def as_csv(rows) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["email", "name", "status", "attributes"])
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


# HYPOTHESIS_EXAMPLES=500 for a longer search than CI's.
SETTINGS = settings(max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", 25)), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(rows=ROWS, overwrite=st.booleans(), mode=st.sampled_from(["subscribe", "blocklist"]))
def test_categories_add_up_and_a_second_import_changes_nothing(tmp_path, mail_home, rows, overwrite, mode):
    shutil.rmtree(mail_home, ignore_errors=True)
    path = tmp_path / "gen.csv"
    path.write_bytes(as_csv(rows))
    _, first = run_import(path, lists=["news"], overwrite=overwrite, mode=mode)
    assert first["number_of_records"] == len(rows)
    assert sum(first["subscribers"].values()) == len(rows)
    before = (query("SELECT * FROM subscribers ORDER BY email"),
              query("SELECT * FROM subscriptions ORDER BY email, list"))
    _, second = run_import(path, lists=["news"], overwrite=overwrite, mode=mode)
    assert sum(second["subscribers"].values()) == len(rows)
    assert second["subscribers"]["failed"] == first["subscribers"]["failed"]
    assert second["subscribers"]["skipped_duplicate"] == first["subscribers"]["skipped_duplicate"]
    after = (query("SELECT * FROM subscribers ORDER BY email"),
             query("SELECT * FROM subscriptions ORDER BY email, list"))
    assert after == before  # updated_at included


TAGS = st.sampled_from(["", "a", "b, a", '"x, y"|z', " ; "])
FORMATS = st.sampled_from(["", "html", "text", "both", "pdf"])
TIMES = st.sampled_from(["", "2014-05-11", "05/11/2014 2:30pm", "March 11, 1994", "31/31/2020",
                         "1994-03-11T14:30:47-06:00"])
IPS = st.sampled_from(["", "192.0.2.1", "2001:db8::1", "999.1.1.1"])
WIDE_ROWS = st.lists(st.tuples(EMAILS, STATUSES, TAGS, FORMATS, TIMES, IPS, CELLS), max_size=20)
OPTIONS = st.fixed_dictionaries({}, optional={
    "overwrite": st.booleans(),
    "overwrite_what": st.fixed_dictionaries({}, optional={
        k: st.booleans() for k in ("custom_fields", "status", "confirmed", "format")}),
    "overwrite_when_status": st.fixed_dictionaries({}, optional={
        k: st.booleans() for k in ("active", "unsubscribed", "bounced", "deactivated", "scomp")}),
    "subscribe_unsubscribed": st.booleans(), "replace_tags": st.booleans(),
    "unsubscribe_others": st.booleans(), "tags": st.sampled_from([[], ["imported"]]),
    "default_custom_fields": st.sampled_from([{}, {"City": "Oslo", "Cars": ["Kia"]}]),
    "date_format": st.sampled_from(["mdy", "dmy"]), "subscriber_limit": st.sampled_from([None, 3]),
    "mode": st.sampled_from(["subscribe", "blocklist"]),
})


def _store() -> tuple:
    return (query("SELECT * FROM subscribers ORDER BY email"),
            query("SELECT * FROM subscriptions ORDER BY email, list"))


@SETTINGS
@given(earlier=WIDE_ROWS, rows=WIDE_ROWS, options=OPTIONS)
def test_every_field_and_option_still_adds_up_and_a_second_import_changes_nothing(
        tmp_path, mail_home, earlier, rows, options):
    shutil.rmtree(mail_home, ignore_errors=True)
    header = ["email", "status", "tags", "email_format", "subscribe_time", "subscribe_ip", "City"]
    for name, content in (("earlier.csv", earlier), ("gen.csv", rows)):
        out = io.StringIO()
        csv.writer(out).writerows([header, *content])
        (tmp_path / name).write_text(out.getvalue(), encoding="utf-8")
    run_import(tmp_path / "earlier.csv", lists=["news", "offers"])  # a store in some state
    _, first = run_import(tmp_path / "gen.csv", lists=["news"], **options)
    assert sum(first["subscribers"].values()) == first["number_of_records"] == len(rows)
    before = _store()
    _, second = run_import(tmp_path / "gen.csv", lists=["news"], **options)
    assert sum(second["subscribers"].values()) == len(rows)
    assert second["subscribers"]["failed"] == first["subscribers"]["failed"]
    assert _store() == before  # updated_at included
