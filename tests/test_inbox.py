"""The file-drop sensor (spec §5), ticked with `build_sensor_context`; its run requests are then
run in process, as the daemon would run them."""
import json
import os
import time

import dagster as dg
import pytest

from mail_pipeline import catalog, home, inbox
from mail_pipeline.errors import MailPipelineError
from tests.helpers import query


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _drop(relative: str, content: str, age: float = 60.0):
    path = inbox.inbox_dir() / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    past = time.time() - age
    os.utime(path, (past, past))
    return path


def _tick(instance):
    from assets.sensors import inbox_sensor
    result = inbox_sensor(dg.build_sensor_context(instance=instance))
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result.run_requests


def _run(instance, request):
    from assets.definitions import defs
    job = defs.resolve_job_def("import_job")
    return job.execute_in_process(run_config=request.run_config, instance=instance,
                                  partition_key=request.partition_key, tags=request.tags)


def test_a_dropped_file_becomes_one_import_and_never_a_second(instance):
    catalog.create_list("weekly")  # id 1
    _drop("news/signups.csv", "email,name\nann@example.com,Ann\nbob@example.com,Bob\n")
    _drop("news/signups.csv.json", "")  # a sidecar is not a file to import
    (inbox.inbox_dir() / "news" / "signups.csv.json").write_text(json.dumps(
        {"mode": "subscribe", "lists": [1], "delim": ",", "overwrite": True}))  # listmonk params
    _drop("notes.pdf", "not a csv")
    [request] = _tick(instance)
    assert request.run_config["ops"]["raw_file"]["config"]["lists"] == ["weekly", "news"]
    assert _run(instance, request).success
    assert query("SELECT email, list FROM subscriptions ORDER BY email, list") == [
        ("ann@example.com", "news"), ("ann@example.com", "weekly"), ("bob@example.com", "news"),
        ("bob@example.com", "weekly")]
    assert [l.name for l in catalog.all_lists()] == ["weekly", "news"]  # created on first use
    assert _tick(instance) == []  # the same file (path, size, mtime) never imports twice
    _drop("news/signups.csv", "email\ncy@example.com\n")  # changed: a new file
    assert len(_tick(instance)) == 1


def test_a_half_written_file_waits_until_it_settles(instance):
    path = _drop("big.csv", "email\nann@example.com\n", age=0)
    assert _tick(instance) == []
    past = time.time() - 60
    os.utime(path, (past, past))
    assert len(_tick(instance)) == 1


def test_a_claimed_file_whose_run_never_started_is_requested_again(instance):
    _drop("a.csv", "email\nann@example.com\n")
    [first] = _tick(instance)  # the daemon stops before launching it
    [again] = _tick(instance)
    assert (again.partition_key, again.run_key) == (first.partition_key, first.run_key)
    assert _run(instance, again).success
    assert _tick(instance) == []


def test_a_bad_sidecar_is_reported_and_the_file_left_alone(instance):
    _drop("b.csv", "email\nann@example.com\n")
    (inbox.inbox_dir() / "b.csv.json").write_text('{"colour": "blue"}')
    assert _tick(instance) == []
    assert not (home.home() / "idempotency").exists() or not any((home.home() / "idempotency").iterdir())


@pytest.mark.parametrize("sidecar, message", [
    ({"subscriber_import": {"column_mapping": ["email"], "file_source": {
        "type": "upload_directory", "filename": "../../etc/passwd"}}}, "it must name a file inside"),
    ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),
])
def test_a_sidecar_cannot_lead_out_of_its_folder_or_nest_without_end(instance, sidecar, message):
    dropped = _drop("c.csv", "email\nann@example.com\n")
    text = sidecar if isinstance(sidecar, str) else json.dumps(sidecar)
    (inbox.inbox_dir() / "c.csv.json").write_text(text)
    [settled] = list(inbox.settled_files())
    with pytest.raises(MailPipelineError, match=message):
        inbox.options_for(settled)
    assert _tick(instance) == []
    assert dropped.exists()
