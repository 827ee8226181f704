"""Every category of spec §3 "Fate" and every overwrite gate, table-driven: a store in a known
state, one import, the category each row gets and what it changed."""
import pytest

from tests.helpers import categories, query, run_import

# The store before each case: ann is on `news` with the given subscription status.
STATUSES = ("unconfirmed", "confirmed", "unsubscribed", "bounced", "deactivated", "complained")


@pytest.fixture
def store_with_ann(write_csv):
    def make(status: str = "confirmed", subscriber: str = "enabled", lists=("news",)):
        path = write_csv(f"email,name,status\nann@example.com,Ann,{subscriber}\n", name="seed.csv")
        run_import(path, lists=list(lists), subscription_status="confirmed")
        if status != "confirmed":
            path = write_csv(f"email,status\nann@example.com,{status}\n", name="status.csv")
            run_import(path, lists=list(lists), overwrite=True,
                       overwrite_what={"status": True}, overwrite_when_status={
                           "active": True, "unsubscribed": True, "bounced": True,
                           "deactivated": True, "scomp": True})
        if subscriber != "blocklisted":  # (a blocklisted one's subscriptions are unsubscribed)
            assert query("SELECT status FROM subscriptions") == [(status,)] * len(lists)
    return make


CASES = [
    # (ann's subscription status, import options, expected category)
    ("confirmed", {}, "skipped_overwrite"),
    ("unconfirmed", {"overwrite": True}, "updated"),
    ("confirmed", {"overwrite": True}, "updated"),
    ("confirmed", {"overwrite": True, "overwrite_when_status": {"active": False}}, "skipped_active"),
    ("unconfirmed", {"overwrite": True, "overwrite_when_status": {"active": False}}, "skipped_active"),
    ("unsubscribed", {}, "skipped_unsubscribed"),
    ("unsubscribed", {"overwrite": True}, "skipped_unsubscribed"),
    ("unsubscribed", {"overwrite": True, "overwrite_when_status": {"unsubscribed": True}}, "updated"),
    ("unsubscribed", {"subscribe_unsubscribed": True}, "added"),
    ("bounced", {}, "skipped_overwrite"),
    ("bounced", {"overwrite": True}, "skipped_bounced"),
    ("bounced", {"overwrite": True, "overwrite_when_status": {"bounced": True}}, "updated"),
    ("deactivated", {"overwrite": True}, "skipped_deactivated"),
    ("deactivated", {"overwrite": True, "overwrite_when_status": {"deactivated": True}}, "updated"),
    ("complained", {"overwrite": True}, "skipped_scomp"),
    ("complained", {"overwrite": True, "overwrite_when_status": {"scomp": True}}, "updated"),
    ("confirmed", {"lists": ["news", "offers"]}, "added"),  # newly on one target list
    ("confirmed", {"mode": "blocklist"}, "updated"),
]


@pytest.mark.parametrize("status, options, expected", CASES)
def test_each_gate_gives_its_category(store_with_ann, write_csv, status, options, expected):
    store_with_ann(status)
    path = write_csv("email,name\nann@example.com,Annie\n")
    import_id, stats = run_import(path, **{"lists": ["news"], **options})
    assert categories(stats) == {expected: 1}
    changed = query("SELECT name FROM subscribers") == [("Annie",)]
    # Only an update (or an add with an allowed overwrite) changes her fields.
    assert changed == (expected == "updated" and options.get("mode") != "blocklist")


def test_a_blocklisted_subscriber_is_never_resubscribed(store_with_ann, write_csv):
    store_with_ann("confirmed", subscriber="blocklisted")
    path = write_csv("email\nann@example.com\n")
    for options in ({}, {"overwrite": True}, {"subscribe_unsubscribed": True}, {"lists": ["offers"]}):
        _, stats = run_import(path, **{"lists": ["news"], **options})
        assert categories(stats) == {"skipped_blocklisted": 1}
    assert query("SELECT list, status FROM subscriptions") == [("news", "unsubscribed")]


def test_new_rows_added_then_over_the_limit_duplicates_and_failures(store_with_ann, write_csv):
    store_with_ann()
    path = write_csv("email\nb@example.com\nc@example.com\nb@example.com\nnot-an-email\nann@example.com\n")
    import_id, stats = run_import(path, lists=["news"], subscriber_limit=2)
    assert categories(stats) == {"added": 1, "skipped_over_limit": 1, "skipped_duplicate": 1,
                                 "failed": 1, "skipped_overwrite": 1}
    assert sum(stats["subscribers"].values()) == stats["number_of_records"] == 5


def test_blocklist_mode_adds_and_updates_and_unsubscribes_everywhere(store_with_ann, write_csv):
    store_with_ann("confirmed", lists=("news", "offers"))
    path = write_csv("email\nann@example.com\nnew@example.com\n")
    _, stats = run_import(path, lists=["news"], mode="blocklist")
    assert categories(stats) == {"updated": 1, "added": 1}
    assert query("SELECT DISTINCT status FROM subscribers") == [("blocklisted",)]
    assert query("SELECT email, list, status FROM subscriptions ORDER BY email, list") == [
        ("ann@example.com", "news", "unsubscribed"), ("ann@example.com", "offers", "unsubscribed"),
        ("new@example.com", "news", "unsubscribed")]


# overwrite_what: which of the row's values an update may write.
WHAT_CASES = [
    ({}, {"name": "Annie", "status": "enabled", "sub": "unconfirmed", "format": None,
          "attributes": '{"city":"Oslo"}'}),
    ({"custom_fields": False}, {"name": "Ann", "status": "enabled", "sub": "unconfirmed",
                                "format": None, "attributes": "{}"}),
    ({"status": True}, {"name": "Annie", "status": "disabled", "sub": "confirmed", "format": None,
                        "attributes": '{"city":"Oslo"}'}),
    ({"confirmed": True}, {"name": "Annie", "status": "enabled", "sub": "confirmed", "format": None,
                           "attributes": '{"city":"Oslo"}'}),
    ({"format": True}, {"name": "Annie", "status": "enabled", "sub": "unconfirmed", "format": "text",
                        "attributes": '{"city":"Oslo"}'}),
]


@pytest.mark.parametrize("what, expected", WHAT_CASES)
def test_overwrite_what_decides_which_values_an_update_writes(store_with_ann, write_csv, what, expected):
    store_with_ann("unconfirmed")
    # A subscriber status and a subscription status in two rows' worth of columns: the file says
    # disabled (subscriber) via `status`, confirmed via a confirm time.
    path = write_csv("email,name,status,email_format,city,confirm_time\n"
                     "ann@example.com,Annie,disabled,text,Oslo,2024-01-02 10:00\n")
    _, stats = run_import(path, lists=["news"], overwrite=True, overwrite_what=what)
    assert categories(stats) == {"updated": 1}
    [(name, status, fmt, attributes)] = query("SELECT name, status, email_format, attributes FROM subscribers")
    [(sub,)] = query("SELECT status FROM subscriptions")
    assert {"name": name, "status": status, "sub": sub, "format": fmt, "attributes": attributes} == expected


def test_with_overwrite_the_most_restrictive_status_decides(write_csv):
    run_import(write_csv("email\nann@example.com\n"), lists=["l1", "l2"])
    status = write_csv("email,status\nann@example.com,unsubscribed\n", name="u.csv")
    run_import(status, lists=["l1"], overwrite=True, overwrite_what={"status": True})
    status.write_text("email,status\nann@example.com,bounced\n")
    run_import(status, lists=["l2"], overwrite=True, overwrite_what={"status": True})
    path = write_csv("email\nann@example.com\n", name="again.csv")
    assert categories(run_import(path, lists=["l1", "l2"])[1]) == {"skipped_unsubscribed": 1}
    assert categories(run_import(path, lists=["l1", "l2"], overwrite=True)[1]) == {"skipped_bounced": 1}


def test_an_allowed_overwrite_of_a_subscriber_new_to_one_list_updates_the_others_too(write_csv):
    run_import(write_csv("email\nann@example.com\n"), lists=["l1"])
    path = write_csv("email,status,subscribe_time\nann@example.com,confirmed,2021-01-01\n", name="b.csv")
    _, stats = run_import(path, lists=["l1", "l2"], overwrite=True, overwrite_what={"status": True})
    assert categories(stats) == {"added": 1}
    assert query("SELECT list, status, subscribe_time IS NOT NULL FROM subscriptions ORDER BY list") == [
        ("l1", "confirmed", True), ("l2", "confirmed", True)]
