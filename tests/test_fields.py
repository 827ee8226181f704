"""Fields beyond email, name, status and attributes (spec §3 "Mapping" and "Values"): tags,
email_format, subscription times and IPs, dates in both orders, header aliases of other tools'
exports, Mailcoach's flags, and the dry run."""
import csv
import json

import pytest

from mail_pipeline import home
from tests.helpers import categories, cli, log_lines, query, run_import


def test_tags_are_added_or_replaced_and_an_empty_cell_keeps_them(write_csv):
    first = write_csv('email,tags\nann@example.com,"a, b"\nbob@example.com,x\n')
    run_import(first, lists=["news"])
    second = write_csv("email,tags\nann@example.com,c|a\nbob@example.com,\n", name="second.csv")
    run_import(second, lists=["news"], overwrite=True, tags=["imported"])
    assert query("SELECT email, tags FROM subscribers ORDER BY email") == [
        ("ann@example.com", ["a", "b", "c", "imported"]), ("bob@example.com", ["imported", "x"])]
    run_import(second, lists=["news"], overwrite=True, replace_tags=True)
    # replace_tags: ann's tags are now the file's; bob's empty cell replaces nothing.
    assert query("SELECT email, tags FROM subscribers ORDER BY email") == [
        ("ann@example.com", ["a", "c"]), ("bob@example.com", ["imported", "x"])]


def test_import_tags_go_only_to_added_or_updated_subscribers(write_csv):
    run_import(write_csv("email\nann@example.com\n"), lists=["news"])
    path = write_csv("email\nann@example.com\nbob@example.com\n", name="second.csv")
    _, stats = run_import(path, lists=["news"], tags=["Website Signup"])
    assert categories(stats) == {"skipped_overwrite": 1, "added": 1}
    assert query("SELECT email, tags FROM subscribers ORDER BY email") == [
        ("ann@example.com", []), ("bob@example.com", ["Website Signup"])]


@pytest.mark.parametrize("date_format, expected", [("mdy", "2014-05-11"), ("dmy", "2014-11-05")])
def test_times_follow_date_format_and_land_on_the_subscription(write_csv, date_format, expected):
    path = write_csv("email,subscribe_time,subscribe_ip,confirm_time,remove_time,remove_ip\n"
                     "ann@example.com,05/11/2014 2:30pm,192.0.2.1,March 11 1994,,\n"
                     "bob@example.com,1994-03-11T14:30:47-06:00,2001:db8::1,,11 March 1994,192.0.2.9\n"
                     .replace("March 11 1994", "\"March 11, 1994\""))
    _, stats = run_import(path, lists=["news"], date_format=date_format)
    assert categories(stats) == {"added": 2}
    rows = query("SELECT email, strftime(subscribe_time AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S'),"
                 " subscribe_ip, confirm_time IS NOT NULL, strftime(remove_time AT TIME ZONE 'UTC', '%Y-%m-%d'),"
                 " remove_ip, status FROM subscriptions ORDER BY email")
    assert rows == [
        ("ann@example.com", f"{expected} 14:30:00", "192.0.2.1", True, None, None, "confirmed"),
        ("bob@example.com", "1994-03-11 20:30:47", "2001:db8::1", False, "1994-03-11", "192.0.2.9",
         "unconfirmed")]


def test_values_that_do_not_parse_fail_their_row_naming_the_column(write_csv):
    path = write_csv("email,Signup Date,Format,OPTIN_IP\n"
                     "a@example.com,31/31/2020,html,192.0.2.1\n"
                     "b@example.com,2020-01-02,xml,192.0.2.1\n"
                     "c@example.com,2020-01-02,text,300.1.1.1\n"
                     "d@example.com,2020-01-02,both,192.0.2.1\n")
    import_id, stats = run_import(path, lists=["news"], column_map={
        "email": "email", "Signup Date": "subscribe_time", "Format": "email_format",
        "OPTIN_IP": "subscribe_ip"})
    assert categories(stats) == {"failed": 3, "added": 1}
    failed = list(csv.reader(log_lines(import_id, "failed")))
    assert failed[0] == ["email", "Signup Date", "Format", "OPTIN_IP", "error"]
    assert failed[1][:4] == ["a@example.com", "31/31/2020", "html", "192.0.2.1"]
    assert failed[1][4].startswith("invalid subscribe_time '31/31/2020' in column 'Signup Date': "
                                   "expected a date such as 1994-03-11")
    assert failed[2][4] == "invalid email_format 'xml' in column 'Format': must be html, text or both"
    assert failed[3][4] == ("invalid subscribe_ip '300.1.1.1' in column 'OPTIN_IP': not an IPv4 or "
                            "IPv6 address")
    assert query("SELECT email_format FROM subscribers") == [("both",)]


MAILCHIMP = '''\
"Email Address","First Name","Last Name","MEMBER_RATING","OPTIN_TIME","OPTIN_IP","CONFIRM_TIME","CONFIRM_IP","LATITUDE","LONGITUDE","GMTOFF","DSTOFF","TIMEZONE","CC","REGION","LAST_CHANGED","LEID","EUID","NOTES","TAGS"
ann@example.com,Ann,Lee,2,"2019-03-14 17:42:21",192.0.2.1,"2019-03-14 17:43:02",192.0.2.1,,,,,,,,"2019-03-14 17:43:02",12345,abc123,,"""VIP"",""Early, bird"""
bob@example.com,Bob,,1,"2020-06-01 08:00:00",,,,,,,,,,,"2020-06-01 08:00:00",12346,abc124,,
'''


def test_a_mailchimp_audience_export_imports_without_a_mapping(write_csv):
    import_id, stats = run_import(write_csv(MAILCHIMP), lists=["news"])
    assert categories(stats) == {"added": 2}
    assert query("SELECT email, name, tags, attributes->>'MEMBER_RATING' FROM subscribers ORDER BY email") == [
        ("ann@example.com", "Ann Lee", ["Early, bird", "VIP"], "2"), ("bob@example.com", "Bob", [], "1")]
    assert query("SELECT email, status, strftime(subscribe_time AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S'),"
                 " subscribe_ip FROM subscriptions ORDER BY email") == [
        ("ann@example.com", "confirmed", "2019-03-14 17:42:21", "192.0.2.1"),
        ("bob@example.com", "unconfirmed", "2020-06-01 08:00:00", None)]
    log = "\n".join(log_lines(import_id, "log"))
    for line in ("column 'Email Address' → email", "column 'OPTIN_TIME' → subscribe_time",
                 "column 'OPTIN_IP' → subscribe_ip", "column 'CONFIRM_TIME' → confirm_time",
                 "column 'TAGS' → tags", "column 'LEID' → custom field 'LEID'",
                 "columns 'First Name' + 'Last Name' → name"):
        assert line in log


def test_a_listmonk_export_imports_without_a_mapping(write_csv):
    path = write_csv('uuid,email,name,attributes,status,created_at,updated_at\n'
                     '5e91dda1-1c16-467d-9bf9-2a21bf22ae21,ann@example.com,Ann,"{""city"": ""Oslo""}",'
                     'blocklisted,2020-02-10 12:30:00,2021-03-01 09:00:00\n')
    _, stats = run_import(path, lists=["news"])
    assert categories(stats) == {"added": 1}
    assert query("SELECT name, status, attributes, strftime(created_at AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M'),"
                 " strftime(updated_at AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M') FROM subscribers") == [
        ("Ann", "blocklisted", '{"city":"Oslo","uuid":"5e91dda1-1c16-467d-9bf9-2a21bf22ae21"}',
         "2020-02-10 12:30", "2021-03-01 09:00")]


def test_unsubscribe_others_runs_once_and_only_when_no_row_failed(write_csv):
    run_import(write_csv("email\nann@example.com\nbob@example.com\ncy@example.com\n"), lists=["news"])
    run_import(write_csv("email\ncy@example.com\n", name="other.csv"), lists=["offers"])
    with_failure = write_csv("email\nann@example.com\nnot-an-email\n", name="bad.csv")
    import_id, stats = run_import(with_failure, lists=["news"], unsubscribe_others=True)
    assert "unsubscribed_others" not in stats
    assert "not unsubscribing others: 1 rows failed" in "\n".join(log_lines(import_id, "log"))
    assert query("SELECT count(*) FROM subscriptions WHERE status = 'unsubscribed'") == [(0,)]
    clean = write_csv("email\nann@example.com\n", name="clean.csv")
    import_id, stats = run_import(clean, lists=["news"], unsubscribe_others=True)
    assert stats["unsubscribed_others"] == 2
    assert log_lines(import_id, "unsubscribed_others") == ["bob@example.com", "cy@example.com"]
    assert query("SELECT email, list, status FROM subscriptions ORDER BY email, list") == [
        ("ann@example.com", "news", "unconfirmed"), ("bob@example.com", "news", "unsubscribed"),
        ("cy@example.com", "news", "unsubscribed"), ("cy@example.com", "offers", "unconfirmed")]
    # Merged again (a resumed run), it does not run twice.
    from mail_pipeline import pipeline
    pipeline.merge_import(pipeline.Folder.of(import_id), home.database_path())
    assert query("SELECT count(*) FROM import_steps") == [(1,)]


def test_default_custom_fields_fill_new_subscribers_and_the_file_wins(write_csv):
    path = write_csv("email,City\nann@example.com,Oslo\nbob@example.com,\n")
    run_import(path, lists=["news"], default_custom_fields={"City": "Bergen", "Cars": ["Kia"]})
    assert query("SELECT email, attributes FROM subscribers ORDER BY email") == [
        ("ann@example.com", '{"City":"Oslo","Cars":["Kia"]}'),
        ("bob@example.com", '{"City":"Bergen","Cars":["Kia"]}')]


def test_dry_run_prints_the_document_and_logs_and_changes_nothing(mail_home, write_csv):
    seed = cli("import", str(write_csv("email\nann@example.com\n")), "--list", "news", home=mail_home)
    assert seed.returncode == 0, seed.stderr
    before = query("SELECT * FROM subscribers"), query("SELECT * FROM subscriptions")
    path = write_csv("email,name\nann@example.com,Annie\nbob@example.com,Bob\nbad,X\n", name="next.csv")
    result = cli("import", str(path), "--list", "news", "--list", "offers", "--dry-run", "--json",
                 home=mail_home)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["dry_run"] is True and document["state"] == "finished"
    assert categories(document["stats"]) == {"added": 2, "failed": 1}
    failed = (home.home() / document["logs"] / "failed.csv").read_text().splitlines()
    assert failed[1].startswith("bad,X,")
    assert (query("SELECT * FROM subscribers"), query("SELECT * FROM subscriptions")) == before
    assert query("SELECT name FROM lists") == [("news",)]
    listing = json.loads(cli("imports", "--scope", "all", "--json", home=mail_home).stdout)
    assert listing["num_records"] == 1  # a dry run is not an import
    plain = cli("import", str(path), "--list", "news", "--dry-run", home=mail_home)
    assert "added                 1" in plain.stdout and "skipped_overwrite" in plain.stdout
    assert "nothing was written" in plain.stdout


def test_aliases_rank_below_exact_names_and_each_other(write_csv):
    from mail_pipeline.mapping import resolve
    from mail_pipeline.options import ImportOptions
    mapping = resolve(["Mail", "Email Address", "Status"], ImportOptions())
    assert mapping.fields == {"email": 1, "status": 2} and mapping.custom == {"Mail": 0}


def test_reasons_quote_the_cell_as_written(write_csv):
    path = write_csv("email,status,email_format\na@example.com,Weird,html\nb@example.com,,PDF\n")
    import_id, _ = run_import(path)
    reasons = [row[-1] for row in csv.reader(log_lines(import_id, "failed")[1:])]
    assert reasons[0].startswith("invalid status 'Weird' in column 'status'")
    assert reasons[1] == "invalid email_format 'PDF' in column 'email_format': must be html, text or both"


def test_a_dry_run_on_a_fresh_home_creates_no_store_and_leaves_no_spooled_file(mail_home):
    result = cli("import", "-", "--list", "news", "--dry-run", "--json", stdin="email\na@example.com\n",
                 home=mail_home)
    assert result.returncode == 0, result.stderr
    assert categories(json.loads(result.stdout)["stats"]) == {"added": 1}
    assert not home.database_path().exists()
    assert list(home.uploads_dir().glob("*")) == []
