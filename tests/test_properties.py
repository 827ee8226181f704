"""Properties of every import, on generated files (hypothesis)."""
import csv
import io
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


SETTINGS = settings(max_examples=25, deadline=None,
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
