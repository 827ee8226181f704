"""Every CSV example of the listmonk seed (shared/seeds/004_…), with its params as written there,
and the outcome the seed describes."""
import json
import zipfile

import pytest

from mail_pipeline import catalog
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.options import build
from mail_pipeline.params import read_params
from tests.helpers import categories, log_lines, query, run_import


@pytest.fixture(autouse=True)
def listmonk_lists(mail_home):
    """listmonk's `lists` are list ids: a fresh listmonk has these two, ids 1 and 2."""
    return [catalog.create_list("Default list"), catalog.create_list("Opt-in list")]


def seed_import(tmp_path, csv_path, params: str):
    params_file = tmp_path / "params.json"
    params_file.write_text(params)
    return run_import(csv_path, **read_params(str(params_file)))


START_PARAMS = """{
    "mode": "subscribe",
    "delim": ",",
    "lists": [1, 2],
    "overwrite": true,
    "subscription_status": "confirmed"
  }"""


def test_example_csv_invalid_email_is_skipped_and_logged(tmp_path, write_csv):
    path = write_csv('''
        email,name,status,attributes
        john@example.com,John Doe,enabled,"{""city"": ""Bangalore"", ""age"": 30}"
        j ane@example.com,Jane Smith,enabled,"{""city"": ""New York""}"
        bob@example.com,Bob Johnson,enabled,
        ''')
    import_id, stats = seed_import(tmp_path, path, START_PARAMS)
    assert categories(stats) == {"added": 2, "failed": 1}
    assert log_lines(import_id, "failed")[1].startswith("j ane@example.com,Jane Smith,enabled,")
    assert query("SELECT email, status, attributes->>'city' FROM subscribers ORDER BY email") == [
        ("bob@example.com", "enabled", None), ("john@example.com", "enabled", "Bangalore")]
    assert query("SELECT DISTINCT list, status FROM subscriptions ORDER BY list") == [
        ("Default list", "confirmed"), ("Opt-in list", "confirmed")]


SUBSCRIBE_CSV = '''
    email,name,attributes
    john@example.com,John Doe,"{""source"": ""webinar""}"
    jane@example.com,Jane Smith,"{""source"": ""webinar""}"
    '''


def test_subscribe_mode_adds_to_lists_with_the_given_status(tmp_path, write_csv):
    params = """{"mode": "subscribe", "lists": [1, 2], "subscription_status": "confirmed",
                 "delim": ",", "overwrite": false}"""
    _, stats = seed_import(tmp_path, write_csv(SUBSCRIBE_CSV), params)
    assert categories(stats) == {"added": 2}
    assert query("SELECT count(*) FROM subscriptions WHERE status = 'confirmed'") == [(4,)]
    # Without overwrite an existing subscriber is skipped ("already exists").
    _, stats = seed_import(tmp_path, write_csv(SUBSCRIBE_CSV, "again.csv"), params)
    assert categories(stats) == {"skipped_overwrite": 2}


def test_blocklist_mode(tmp_path, write_csv):
    path = write_csv("email\nspammer@example.com\nabuse@example.com\n")
    import_id, stats = seed_import(tmp_path, path, '{"mode": "blocklist", "lists": [], "delim": ","}')
    assert categories(stats) == {"added": 2}
    assert query("SELECT email, status FROM subscribers ORDER BY email") == [
        ("abuse@example.com", "blocklisted"), ("spammer@example.com", "blocklisted")]


def test_update_existing_subscribers_with_overwrite(tmp_path, write_csv):
    seed_import(tmp_path, write_csv(SUBSCRIBE_CSV), '{"mode": "subscribe", "lists": [1], "delim": ","}')
    path = write_csv('email,name,attributes\njohn@example.com,John Doe Updated,"{""city"": ""San Francisco""}"\n',
                     "updates.csv")
    _, stats = seed_import(tmp_path, path,
                           '{"mode": "subscribe", "lists": [1], "overwrite": true, "delim": ","}')
    assert categories(stats) == {"updated": 1}
    [(name, attributes)] = query("SELECT name, attributes::VARCHAR FROM subscribers WHERE email = 'john@example.com'")
    assert name == "John Doe Updated"
    # "New attributes are merged with existing … Attributes not in CSV are preserved"
    assert json.loads(attributes) == {"source": "webinar", "city": "San Francisco"}


def test_overwrite_adds_to_new_lists_without_removing_existing_ones(tmp_path, write_csv):
    seed_import(tmp_path, write_csv(SUBSCRIBE_CSV), '{"mode": "subscribe", "lists": [1], "delim": ","}')
    seed_import(tmp_path, write_csv(SUBSCRIBE_CSV, "b.csv"),
                '{"mode": "subscribe", "lists": [2], "overwrite": true, "delim": ","}')
    assert query("SELECT email, list FROM subscriptions ORDER BY email, list") == [
        ("jane@example.com", "Default list"), ("jane@example.com", "Opt-in list"),
        ("john@example.com", "Default list"), ("john@example.com", "Opt-in list")]


def test_zip_only_the_first_csv_is_processed(tmp_path):
    archive = tmp_path / "subscribers.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("1.csv", "email\nfirst@example.com\n")
        z.writestr("2.csv", "email\nsecond@example.com\n")
    import_id, stats = seed_import(tmp_path, archive, '{"mode": "subscribe", "lists": [1], "delim": ","}')
    assert log_lines(import_id, "added") == ["first@example.com"]


def test_duplicate_emails_in_the_csv_are_ignored(tmp_path, write_csv):
    path = write_csv("email\na@example.com\nA@example.com\n")
    import_id, stats = seed_import(tmp_path, path, '{"mode": "subscribe", "lists": [1]}')
    assert categories(stats) == {"added": 1, "skipped_duplicate": 1}


@pytest.mark.parametrize("params, message", [
    ('{"mode": "subscribe", "lists": [1], "delim": ";;"}', "invalid delimiter: must be a single character"),
    ('{"mode": "upsert", "lists": [1]}', "invalid mode: must be 'subscribe' or 'blocklist'"),
])
def test_common_errors_use_listmonks_wording(tmp_path, params, message):
    path = tmp_path / "p.json"
    path.write_text(params)
    with pytest.raises(MailPipelineError) as caught:
        build(read_params(str(path)))
    assert str(caught.value) == message


def test_invalid_file_format(tmp_path):
    path = tmp_path / "photo.csv"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    with pytest.raises(MailPipelineError) as caught:
        run_import(path)
    assert str(caught.value) == "invalid file: not a CSV or ZIP"
