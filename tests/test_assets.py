"""The Dagster layer: definitions load, and an import runs as one partitioned run of the assets."""
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from assets.names import POOL
from mail_pipeline.options import build
from tests.helpers import execute

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def instance():
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"granularity": "op"}}}) as inst:
        yield inst


def test_definitions_load_and_resolve_the_asset_graph():
    from assets.definitions import defs
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == {"raw_file", "validated_frame", "subscribers", "import_logs", "subscriber_export",
                    "export_all_subscribers", "export_newsletter_confirmed"}  # (see exports.toml)
    job = defs.resolve_job_def("import_job")
    assert job.executor_def.name == "in_process"
    pools = {node.name: node.definition.pool for node in job.graph.node_dict.values()}
    assert pools["subscribers"] == POOL  # the only import asset that opens the store
    # Every asset that opens the store shares its pool.
    for key in ("subscriber_export", "export_all_subscribers", "export_newsletter_confirmed"):
        assert graph.get(dg.AssetKey(key)).pools == {POOL}


def test_workspace_validates():
    result = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_an_import_is_one_run_with_metadata_on_every_stage(instance, write_csv):
    from service import jobs as runs, state
    path = write_csv("email,name\na@example.com,A\nnot-an-email,B\na@example.com,A again\n")
    import_id, _ = runs.create_import(instance)
    result = execute(instance, import_id, build({"source": str(path), "lists": ["news"]}))
    assert result.success
    materialized = result.materializations()
    assert set(materialized) == {"raw_file", "validated_frame", "subscribers", "import_logs"}
    assert materialized["subscribers"]["subscribers_total"].value == 1
    assert materialized["subscribers"]["subscriptions_by_list"].value == {"news": {"unconfirmed": 1}}
    assert result.check_results() == {"categories_add_up": True, "emails_unique": True,
                                      "no_subscription_without_subscriber": True}
    assert materialized["raw_file"]["row_count"].value == 3
    assert len(materialized["raw_file"]["sha256"].value) == 64
    assert materialized["validated_frame"]["failed"].value == 1
    assert materialized["subscribers"]["rows_added"].value == 1
    assert materialized["import_logs"]["skipped_duplicate"].value == 1
    preview = materialized["import_logs"]["failed_preview"]
    assert [r.data for r in preview.records] == [
        {"0: email": "not-an-email", "1: name": "B", "2: error": "An email address must have an @-sign."}]
    document = state.document(state.records(), import_id)
    assert document["state"] == "finished" and document["run_id"] == result.run_id
    assert document["stats"]["subscribers"]["added"] == 1
    assert document["stats"]["records_imported"] == 3
    run = instance.get_run_by_id(result.run_id)
    assert run.tags["dagster/partition"] == import_id
    # Readable in the runs list: the source file's name and the lists.
    assert (run.tags["mail_pipeline/source"], run.tags["mail_pipeline/lists"]) == ("input.csv", "news")


def test_a_bad_file_fails_the_run_with_one_sentence_and_writes_nothing(instance, tmp_path):
    from service import jobs as runs, state
    from mail_pipeline import home
    path = tmp_path / "bad.csv"
    path.write_bytes(b"\x00\x01\x02binary")
    import_id, _ = runs.create_import(instance)
    result = execute(instance, import_id, build({"source": str(path)}))
    assert not result.success
    document = state.document(state.records(), import_id)
    assert document["state"] == "failed"
    assert document["error_message"] == "invalid file: not a CSV or ZIP"
    assert not home.database_path().exists()


def test_an_unexpected_error_fails_the_run_with_its_message(instance, write_csv, monkeypatch):
    from service import jobs as runs, state
    from mail_pipeline import pipeline

    def boom(import_id):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pipeline, "validate_import", boom)
    import_id, _ = runs.create_import(instance)
    result = execute(instance, import_id,
                                 build({"source": str(write_csv("email\na@x.com\n"))}))
    assert not result.success
    assert state.document(state.records(), import_id)["error_message"] == "RuntimeError: disk on fire"


def test_a_partition_key_that_is_not_an_import_id_fails_in_one_sentence(instance, write_csv):
    from service import state
    instance.add_dynamic_partitions("imports", ["../escape"])
    result = execute(instance, "../escape", build({"source": str(write_csv("email\na@x.com\n"))}))
    assert not result.success
    assert state.failure_message(state.records(), state.records().run(result.run_id)).startswith("invalid import id '../escape'")


def test_a_reexecution_resumes_the_first_attempts_file_even_if_the_source_changed(instance, write_csv):
    from service import jobs as runs, state
    from mail_pipeline import home
    path = write_csv("email,name\na@x.com,A\nb@x.com,B\n")
    import_id, _ = runs.create_import(instance)
    assert execute(instance, import_id, build({"source": str(path), "lists": ["news"]})).success
    first = state.document(state.records(), import_id)["stats"]
    path.write_text("email,name\nother@x.com,O\n")  # edited, then the import is re-executed
    from assets.definitions import defs  # (as the UI's Re-execute does)
    assert defs.resolve_job_def("import_job").execute_in_process(
        run_config={"ops": {"raw_file": {"config": build({"source": str(path), "lists": ["news"]}).model_dump()}}},
        instance=instance, partition_key=import_id).success
    document = state.document(state.records(), import_id)
    assert document["stats"] == first
    assert sum(document["stats"]["subscribers"].values()) == document["stats"]["number_of_records"] == 2
    con = __import__("duckdb").connect(str(home.database_path()), read_only=True)
    assert con.execute("SELECT email FROM subscribers ORDER BY email").fetchall() == [("a@x.com",), ("b@x.com",)]
    con.close()


def test_the_launchpad_config_takes_every_seeds_options(instance):
    """A Mailrith body and a GreenArrow body, as the canonical config the launchpad shows:
    inline CSV, named mapping, tags, default custom fields, subscriber defaults."""
    from service import jobs as runs, state
    from mail_pipeline.params import from_body
    _, mailrith = from_body({"csv_text": "Email,Name,Co\nada@example.com,Ada,ACME\n",
                             "mappings": [{"csv_column": "Email", "field": {"type": "email"}},
                                          {"csv_column": "Co", "field": {"type": "custom_field", "key": "company"}}],
                             "new_tag_name": "Website Signup"})
    greenarrow_body = json.loads((Path(__file__).parent / "seeds" / "greenarrow_create.json").read_text())
    _, greenarrow = from_body(greenarrow_body)
    for fields in (mailrith, {**greenarrow, "lists": ["Default Mailing List"]}):
        import_id, _ = runs.create_import(instance)
        result = execute(instance, import_id, build(fields))
        assert result.success, state.failure_message(state.records(), state.records().run(result.run_id))
    from mail_pipeline import home
    con = __import__("duckdb").connect(str(home.database_path()), read_only=True)
    assert con.execute("SELECT email, name, attributes, tags, email_format FROM subscribers"
                       " ORDER BY email").fetchall() == [
        ("ada@example.com", None, '{"company":"ACME"}', ["Website Signup"], None),
        ("bilbo@example.com", None, '{"First Name":"Bobbie"}', [], "html"),
        ("bob1234@example.com", None, '{"First Name":"Bobbie"}', [], "html")]
    con.close()
