"""The seed systems' own example requests, used as they are (`tests/seeds/`), through `--params`,
and the adapters' refusals. Expected outcomes are the ones those docs describe."""
import json
from pathlib import Path

import pytest

from mail_pipeline import home
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.options import build
from mail_pipeline.params import read_params
from tests.helpers import categories, cli, query, run_import

SEEDS = Path(__file__).parent / "seeds"


def _import(mail_home, *args) -> dict:
    result = cli("import", *map(str, args), "--json", home=mail_home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_greenarrow_create_example_gives_its_documented_show_response(mail_home, write_csv):
    # GreenArrow's "show" example reports added 1, updated 1 for this request: one of its two
    # addresses was on the list already.
    _import(mail_home, write_csv("email\nbob1234@example.com\n"), "--list", "Default Mailing List")
    document = _import(mail_home, "--params", SEEDS / "greenarrow_create.json",
                       "--list", "Default Mailing List")
    assert document["state"] == "finished"
    assert document["stats"]["number_of_records"] == 2 and document["stats"]["records_imported"] == 2
    assert categories(document["stats"]) == {"added": 1, "updated": 1}
    options = document["options"]
    assert (options["encoding"], options["date_format"], options["overwrite"]) == ("iso-8859-1", "mdy", True)
    assert options["overwrite_when_status"] == {"active": True, "unsubscribed": False, "bounced": False,
                                                "deactivated": False, "scomp": False}
    # subscriber_defaults (active + confirmed, html) fill the new subscriber; default_custom_fields
    # fill it and, as custom fields are overwritten, the updated one too.
    assert query("SELECT email, attributes, email_format FROM subscribers ORDER BY email") == [
        ("bilbo@example.com", '{"First Name":"Bobbie"}', "html"),
        ("bob1234@example.com", '{"First Name":"Bobbie"}', None)]
    assert query("SELECT email, status FROM subscriptions ORDER BY email") == [
        ("bilbo@example.com", "confirmed"), ("bob1234@example.com", "unconfirmed")]
    # The same request again: both are updated, and nothing moves.
    before = query("SELECT * FROM subscribers ORDER BY email")
    again = _import(mail_home, "--params", SEEDS / "greenarrow_create.json", "--list", "Default Mailing List")
    assert categories(again["stats"]) == {"updated": 2}
    assert query("SELECT * FROM subscribers ORDER BY email") == before


def test_mailcoach_create_example_as_printed_is_refused_naming_where_its_json_breaks(mail_home):
    result = cli("import", "--params", str(SEEDS / "mailcoach_create.json"), home=mail_home)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert "params file is not valid JSON" in line and "line 1, column 31" in line


def test_mailcoach_create_example_with_its_csv_fixed(mail_home, tmp_path, write_csv):
    uuid = "befd416e-a776-40c8-8d26-c3322091d697"
    text = (SEEDS / "mailcoach_create.json").read_text()
    fixed = tmp_path / "mailcoach.json"
    fixed.write_text(text.replace('"email\\"', '"email,first_name,last_name\\nann@example.com,Ann,Lee'
                                  '\\nbob@example.com,Bob,\\n"'))
    # bob had unsubscribed from the list: subscribe_unsubscribed (true here) re-subscribes him.
    _import(mail_home, write_csv("email\nbob@example.com\n"), "--list", uuid,
            "--subscription-status", "unsubscribed")
    document = _import(mail_home, "--params", fixed)
    assert document["lists"] == [uuid]
    assert document["options"]["subscribe_unsubscribed"] is True
    assert categories(document["stats"]) == {"added": 2}
    assert query("SELECT email, status FROM subscriptions ORDER BY email") == [
        ("ann@example.com", "unconfirmed"), ("bob@example.com", "unconfirmed")]
    # first_name + last_name make the name; they stay custom fields as well.
    assert query("SELECT name, attributes FROM subscribers WHERE email = 'ann@example.com'") == [
        ("Ann Lee", '{"first_name":"Ann","last_name":"Lee"}')]


def test_mailrith_import_example_runs_unchanged(mail_home):
    document = _import(mail_home, "--params", SEEDS / "mailrith_import.json")
    assert document["state"] == "finished" and categories(document["stats"]) == {"added": 1}
    assert query("SELECT email, name, tags FROM subscribers") == [
        ("ada@example.com", "Ada Lovelace", ["Website Signup"])]
    # Mailrith's import is an upsert: the same job again updates, and changes nothing.
    before = query("SELECT * FROM subscribers")
    again = _import(mail_home, "--params", SEEDS / "mailrith_import.json")
    assert categories(again["stats"]) == {"updated": 1}
    assert query("SELECT * FROM subscribers") == before


def _params(tmp_path, body) -> dict:
    path = tmp_path / "params.json"
    path.write_text(json.dumps(body))
    return read_params(str(path))


def _greenarrow(**changes) -> dict:
    body = json.loads((SEEDS / "greenarrow_create.json").read_text())
    body["subscriber_import"].update(changes)
    return body


@pytest.mark.parametrize("body, message", [
    (_greenarrow(file_format={"csv_field_sep": ";"}),
     "invalid GreenArrow params: unknown key 'subscriber_import.file_format.csv_field_sep'"),
    (_greenarrow(overwrite="yes"), "invalid GreenArrow params: invalid key 'subscriber_import.overwrite'"),
    (_greenarrow(column_mapping=None), "invalid key 'subscriber_import.column_mapping'"),
    (_greenarrow(file_source={"type": "ftp"}), "invalid key 'subscriber_import.file_source.type'"),
    (_greenarrow(file_source={"type": "upload_directory"}),
     "missing key 'subscriber_import.file_source.filename' for a upload_directory source"),
    (_greenarrow(file_source={"type": "upload_directory", "filename": "../secret.csv"}),
     "GreenArrow params: upload file name '../secret.csv': it must name a file inside"),
    (_greenarrow(file_source={"type": "upload_directory", "filename": "/etc/passwd"}),
     "GreenArrow params: upload file name '/etc/passwd': it must name a file inside"),
    (_greenarrow(subscriber_defaults={"status": "sleepy"}),
     "invalid GreenArrow params: 'subscriber_import.subscriber_defaults.status' 'sleepy'"),
    ({"subscribers_csv": "email\n", "email_list_uuid": "x", "unsubscribe_otters": True},
     "invalid Mailcoach params: unknown key 'unsubscribe_otters'"),
    ({"subscribers_csv": "email\n"}, "invalid Mailcoach params: missing key 'email_list_uuid'"),
    ({"subscribers_csv": "email\n", "email_list_uuid": "x", "replace_tags": "true"},
     "invalid Mailcoach params: invalid key 'replace_tags'"),
    ({"csv_text": "e\n", "mappings": [{"csv_column": "e", "field": {"type": "phone"}}]},
     "invalid Mailrith params: 'mappings.0.field.type' 'phone'"),
    ({"csv_text": "e\n", "mappings": [{"csv_column": "e", "feld": {"type": "email"}}]},
     "invalid Mailrith params: unknown key 'mappings.0.feld'"),
    ({"mode": "subscribe", "lists": [1], "delim": ",", "overwrite": 1},
     "invalid listmonk params: invalid key 'overwrite'"),
    ({"lists": ["news"], "colour": "blue"}, "invalid params: unknown key 'colour'"),
    ({"overwrite": "yes"}, "invalid params: invalid key 'overwrite'"),
    ({"subscriber_limit": "5"}, "invalid params: invalid key 'subscriber_limit'"),
    (_greenarrow(overwrite_what={"status": "yes"}),
     "invalid GreenArrow params: invalid key 'subscriber_import.overwrite_what.status'"),
    (_greenarrow(overwrite_when_status={"bounced": 1}),
     "invalid GreenArrow params: invalid key 'subscriber_import.overwrite_when_status.bounced'"),
    (_greenarrow(file_source={"type": "upload_directory", "filename": "a\u0000b"}),
     "upload file name: it cannot hold a NUL character"),
    ({"source": "a\u0000b"}, "invalid source: a file name cannot hold a NUL character"),
    ({"Idempotency-Key": ""}, "'Idempotency-Key' must be a non-empty string"),
    ([1, 2], "the file must hold a JSON object"),
])
def test_unknown_keys_and_wrong_types_are_refused_naming_the_key(tmp_path, body, message):
    with pytest.raises(MailPipelineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build(_params(tmp_path, body))


def test_greenarrow_upload_directory_reads_from_the_uploads_folder(tmp_path):
    uploads = home.uploads_dir()
    uploads.mkdir(parents=True)
    (uploads / "list.csv").write_bytes("Jos\xe9@example.com;Jos\xe9\n".encode("latin-1"))
    body = _greenarrow(file_source={"type": "upload_directory", "filename": "list.csv"},
                       column_mapping=["email", "Nickname"],
                       file_format={"csv_has_headers": False, "character_set": "ISO-8859-1",
                                    "csv_field_separator": ";"})
    fields = _params(tmp_path, body)
    assert fields["source"] == str(uploads / "list.csv") and fields["encoding"] == "iso-8859-1"
    _, stats = run_import(Path(fields.pop("source")), **fields)
    assert categories(stats) == {"added": 1}
    assert query("SELECT email, attributes FROM subscribers") == [
        ("josé@example.com", '{"First Name":"Bobbie","Nickname":"José"}')]


def test_greenarrow_subscriber_defaults_map_to_subscription_status_and_format(tmp_path):
    for defaults, status in [({"status": "active"}, "confirmed"),
                             ({"status": "active", "confirmed": False}, "unconfirmed"),
                             ({"status": "unsubscribed"}, "unsubscribed"),
                             ({"status": "scomp"}, "complained"), ({}, None)]:
        fields = _params(tmp_path, _greenarrow(subscriber_defaults=defaults))
        assert build(fields).subscription_status == status, defaults


def test_mailrith_custom_field_and_tags_mappings(tmp_path, write_csv):
    body = {"csv_text": "E-Mail,Firma,Labels,Ignored\nada@example.com,ACME,vip;beta,x\n",
            "mappings": [{"csv_column": "E-Mail", "field": {"type": "email"}},
                         {"csv_column": "Firma", "field": {"type": "custom_field", "key": "company"}},
                         {"csv_column": "Labels", "field": {"type": "tags"}}],
            "new_tag_name": "Imported", "Idempotency-Key": "import-2026-04-11"}
    fields = _params(tmp_path, body)
    assert fields["idempotency_key"] == "import-2026-04-11"
    assert fields["column_map"] == {"E-Mail": "email", "Firma": "custom:company", "Labels": "tags"}
    source = write_csv(fields.pop("content"))
    import_id, stats = run_import(source, **fields)
    assert categories(stats) == {"added": 1}
    assert query("SELECT attributes, tags FROM subscribers") == [
        ('{"company":"ACME"}', ["Imported", "beta", "vip"])]
    log = (home.import_dir(import_id) / "logs" / "log.txt").read_text()
    assert "column 'Ignored' → not imported" in log and "column 'Firma' → custom field 'company'" in log


def test_a_named_mapping_naming_a_missing_column_fails_before_any_write(write_csv):
    path = write_csv("Email,Name\na@example.com,A\n")
    with pytest.raises(MailPipelineError, match="names column 'Mail', which the file lacks; its "
                       "columns are: Email, Name"):
        run_import(path, column_map={"Mail": "email"})
    assert not home.database_path().exists()


def test_a_mailrith_custom_field_named_like_a_field_stays_a_custom_field(tmp_path, write_csv):
    body = {"csv_text": "Email,Plan Status\nada@example.com,gold\n",
            "mappings": [{"csv_column": "Email", "field": {"type": "email"}},
                         {"csv_column": "Plan Status", "field": {"type": "custom_field", "key": "Status"}}]}
    fields = _params(tmp_path, body)
    _, stats = run_import(write_csv(fields.pop("content")), **fields)
    assert categories(stats) == {"added": 1}
    assert query("SELECT status, attributes FROM subscribers") == [("enabled", '{"Status":"gold"}')]


@pytest.mark.parametrize("options, message", [
    ({"mapping": ["email", "email", "name"], "header": False},
     r"the mapping sends both column 1 \('email'\) and column 2 \('email'\) to 'email'"),
    ({"column_map": {"a": "email", "b": "email"}},
     r"the mapping sends both column 1 \('a'\) and column 2 \('b'\) to 'email'"),
    ({"column_map": {"a": "email", "A": "name"}}, "the mapping names column 'a' twice"),
    ({"column_map": {"a": "email", "b": " "}}, "the mapping gives column 'b' an empty field name"),
])
def test_a_mapping_that_would_lose_a_column_is_refused(write_csv, options, message):
    path = write_csv("a,b,c\nx@example.com,y@example.com,z\n")
    with pytest.raises(MailPipelineError, match=message):
        run_import(path, **options)
