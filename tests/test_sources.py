"""Declared sources (imports.toml): schedules that pull a file, sensors that watch a prefix or
folder, and named exports delivered to object storage or SFTP, against real servers on loopback
(moto's S3 server, Debian's sshd). Schedules are evaluated with `build_schedule_context`,
sensors ticked with `build_sensor_context`; their run requests then run in process, as the
daemon would run them. The daemon itself runs them in tests/test_sources_daemon.py."""
import hashlib
import json
from pathlib import Path

import dagster as dg
import pytest
from dagster._utils.schedules import is_valid_cron_string

from mail_pipeline import download, home, sources
from mail_pipeline.errors import MailPipelineError
from tests.helpers import query
from tests.servers import free_port, s3, s3_endpoint, sftp, sshd  # noqa: F401 (fixtures)

CSV = b"email,name\nann@example.com,Ann\nbob@example.com,Bob\n"


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _declare(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "imports.toml"
    path.write_text(text)
    return path


def _one(path: Path) -> sources.Declared:
    declared, refused = sources.load(path, is_valid_cron_string)
    assert refused == {}
    [only] = declared.values()
    return only


def _tick_schedule(instance, declared):
    from assets.sources import pull_schedule
    return pull_schedule(declared)(dg.build_schedule_context(instance=instance))


def _tick_sensor(instance, declared, cursor=None):
    from assets.sources import watch_sensor
    result = watch_sensor(declared)(dg.build_sensor_context(instance=instance, cursor=cursor))
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _run(instance, request):
    from assets.definitions import defs
    job = defs.resolve_job_def("import_job")
    return job.execute_in_process(run_config=request.run_config, instance=instance,
                                  partition_key=request.partition_key, tags=request.tags)


# --- declarations --------------------------------------------------------------------------------

def test_a_file_declares_a_nightly_pull_and_a_watched_prefix(tmp_path):
    (tmp_path / "partners.json").write_text(json.dumps({"mode": "subscribe", "delim": ";",
                                                        "lists": ["partners"], "overwrite": True}))
    path = _declare(tmp_path, """
[nightly]
source = "https://example.com/export.csv"
params = "partners.json"
lists = ["newsletter"]
schedule = "0 2 * * *"

[signups]
source = "s3://acme/signups/"
watch = true
subscription_status = "confirmed"
""")
    declared, refused = sources.load(path, is_valid_cron_string)
    assert refused == {}
    nightly, signups = declared["nightly"], declared["signups"]
    assert (nightly.schedule, nightly.watch) == ("0 2 * * *", False)
    # Keys in the table win over the params file, as flags win over --params.
    assert (nightly.options.lists, nightly.options.delimiter, nightly.options.overwrite) == (
        ["newsletter"], ";", True)
    assert signups.watch and signups.options.subscription_status == "confirmed"
    from mail_pipeline.remote import Entry
    entry = Entry("s3://acme/signups/vip/a.csv", "vip/a.csv", 10, "etag1")
    options = signups.file_options(entry)
    assert options.source == entry.url and options.lists == ["vip"]
    assert options.idempotency_key == "source:signups:s3://acme/signups/vip/a.csv:10:etag1"


@pytest.mark.parametrize("table, said", [
    ('source = "s3://b/p/"\nwatch = true\ncolour = "blue"', "unknown key 'colour'"),
    ('source = "s3://b/k.csv"\nschedule = "every night"', "invalid key 'schedule' 'every night'"),
    ('source = "s3://b/p/"\nschedule = "0 2 * * *"\nwatch = true', "give either the key 'schedule'"),
    ('source = "s3://b/p/"', "give either the key 'schedule'"),
    ('source = "https://example.com/a.csv"\nwatch = true', "invalid key 'watch'"),
    ('source = "s3://b/p/"\nschedule = "0 2 * * *"', "a schedule pulls one file"),
    ('source = "ftp://example.com/a.csv"\nschedule = "0 2 * * *"', "invalid key 'source'"),
    ('source = "sftp:///no/host"\nwatch = true', "invalid key 'source'"),
    ('schedule = "0 2 * * *"', "missing key 'source'"),
    ('source = "s3://b/k.csv"\nschedule = "0 2 * * *"\ninterval = 60', "invalid key 'interval'"),
    ('source = "s3://b/p/"\nwatch = true\ninterval = 1', "invalid key 'interval'"),
    ('source = "s3://b/p/"\nwatch = true\nmode = "sideways"', "invalid mode"),
    ('source = "s3://b/p/"\nwatch = true\ncontent = "email"', "the key 'content' cannot be declared"),
    ('source = "s3://b/p/"\nwatch = true\nparams = "missing.json"', "params file not found"),
])
def test_a_bad_declaration_is_refused_in_one_sentence_naming_the_source_and_the_key(tmp_path, table, said):
    path = _declare(tmp_path, f'[bad]\n{table}\n\n[good]\nsource = "s3://b/p/"\nwatch = true\n')
    declared, refused = sources.load(path, is_valid_cron_string)
    assert list(declared) == ["good"]  # the others still load
    assert refused["bad"].startswith(f"source 'bad' in {path}: ") and said in refused["bad"]
    assert "\n" not in refused["bad"]


def test_the_code_location_loads_with_a_bad_declaration_and_shows_why(tmp_path, instance):
    from assets.sources import definitions
    path = _declare(tmp_path, '[bad]\nsource = "s3://b/p/"\nwatch = true\ncolour = "blue"\n\n'
                              '[nightly]\nsource = "s3://b/k.csv"\nschedule = "0 2 * * *"\n')
    schedules, sensors = definitions(path)
    assert [s.name for s in schedules] == ["nightly"]
    [refused] = sensors
    assert refused.name == "bad" and refused.default_status == dg.DefaultSensorStatus.RUNNING
    result = refused(dg.build_sensor_context(instance=instance))
    assert "unknown key 'colour'" in result.skip_message
    assert schedules[0].default_status == dg.DefaultScheduleStatus.RUNNING
    broken = _declare(tmp_path, "[nightly\n")  # not TOML at all: still loads, says why
    _, [whole] = definitions(broken)
    assert whole.name == "declared_sources"
    assert "cannot be read" in whole(dg.build_sensor_context(instance=instance)).skip_message


def test_the_definitions_load_the_declared_file(tmp_path, monkeypatch):
    path = _declare(tmp_path, '[signups]\nsource = "s3://b/p/"\nwatch = true\n')
    monkeypatch.setenv("MAIL_PIPELINE_IMPORTS", str(path))
    assert sources.declarations_file() == path
    from assets.sources import definitions
    _, [sensor] = definitions(sources.declarations_file())
    assert sensor.name == "signups" and sensor.job_name == "import_job"


# --- a scheduled pull ------------------------------------------------------------------------------

def test_a_schedule_pulls_from_s3_and_skips_a_pull_that_brings_the_same_bytes(tmp_path, s3, instance):
    s3.put("exports/nightly.csv", CSV)
    declared = _one(_declare(tmp_path, f'[nightly]\nsource = "s3://{s3.bucket}/exports/nightly.csv"\n'
                                       'lists = ["partners"]\nschedule = "0 2 * * *"\n'))
    request = _tick_schedule(instance, declared)
    assert isinstance(request, dg.RunRequest)
    assert request.tags["mail_pipeline/declared_source"] == "nightly"
    assert request.run_config["ops"]["raw_file"]["config"]["source"] == declared.source
    assert _run(instance, request).success
    assert query("SELECT email, list FROM subscriptions ORDER BY email") == [
        ("ann@example.com", "partners"), ("bob@example.com", "partners")]
    log = (home.import_dir(request.partition_key) / "logs" / "log.txt").read_text()
    assert f"downloaded {len(CSV)} bytes" in log  # through the download step, attempts logged
    skipped = _tick_schedule(instance, declared)
    assert isinstance(skipped, dg.SkipReason)
    assert f"same bytes as the pull that made import {request.partition_key}" in skipped.skip_message
    s3.put("exports/nightly.csv", CSV + b"cy@example.com,Cy\n")
    again = _tick_schedule(instance, declared)
    assert isinstance(again, dg.RunRequest) and again.partition_key != request.partition_key
    assert _run(instance, again).success
    s3.put("exports/nightly.csv", CSV)  # the first bytes back: not the same as the last pull's
    back = _tick_schedule(instance, declared)
    assert isinstance(back, dg.RunRequest) and back.partition_key not in (request.partition_key,
                                                                          again.partition_key)


def test_a_pull_whose_run_never_started_is_requested_again(tmp_path, s3, instance):
    s3.put("k.csv", CSV)
    declared = _one(_declare(tmp_path, f'[nightly]\nsource = "s3://{s3.bucket}/k.csv"\n'
                                       'schedule = "0 2 * * *"\n'))
    first = _tick_schedule(instance, declared)  # the daemon stops before launching it
    again = _tick_schedule(instance, declared)
    assert (again.partition_key, again.run_key) == (first.partition_key, first.run_key)


# --- a watched prefix ------------------------------------------------------------------------------

def test_a_sensor_takes_each_settled_file_of_a_prefix_once(tmp_path, s3, instance):
    s3.put("signups/news/a.csv", b"email\nann@example.com\n")
    s3.put("signups/news/b.csv", b"email\nbob@example.com\n")
    s3.put("signups/partial.csv", b"email\ncy@example.com\n")
    s3.put("signups/notes.pdf", b"%PDF")
    s3.put("elsewhere/c.csv", b"email\ndee@example.com\n")
    declared = _one(_declare(tmp_path, f'[signups]\nsource = "s3://{s3.bucket}/signups/"\nwatch = true\n'
                                       'lists = ["all"]\n'))
    first = _tick_sensor(instance, declared)
    assert first.run_requests == []  # seen once: they might still be being written
    s3.put("signups/partial.csv", b"email\ncy@example.com\ndan@example.com\n")  # still growing
    second = _tick_sensor(instance, declared, first.cursor)
    assert sorted(r.run_config["ops"]["raw_file"]["config"]["source"] for r in second.run_requests) == [
        f"s3://{s3.bucket}/signups/news/a.csv", f"s3://{s3.bucket}/signups/news/b.csv"]
    for request in second.run_requests:
        assert request.tags["mail_pipeline/declared_source"] == "signups"
        assert _run(instance, request).success
    assert query("SELECT email, list FROM subscriptions ORDER BY email, list") == [
        ("ann@example.com", "all"), ("ann@example.com", "news"),
        ("bob@example.com", "all"), ("bob@example.com", "news")]
    s3.put("signups/partial.csv", b"email\ncy@example.com\ndan@example.com\neve@example.com\n")
    third = _tick_sensor(instance, declared, second.cursor)
    assert third.run_requests == []  # changed again: it waits
    fourth = _tick_sensor(instance, declared, third.cursor)
    [settled] = fourth.run_requests
    assert settled.run_config["ops"]["raw_file"]["config"]["source"].endswith("signups/partial.csv")
    assert _run(instance, settled).success
    assert _tick_sensor(instance, declared, fourth.cursor).run_requests == []
    # A new daemon with no cursor at all (its state lost) takes nothing twice: each file's
    # identity is bound to its import, and the run keys hold too.
    lost = _tick_sensor(instance, declared)
    assert _tick_sensor(instance, declared, lost.cursor).run_requests == []
    assert query("SELECT count(*) FROM subscribers") == [(5,)]


def test_a_local_folder_is_watched_the_same_way(tmp_path, instance):
    folder = tmp_path / "drop" / "vip"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_bytes(CSV)
    declared = _one(_declare(tmp_path, '[drop]\nsource = "drop"\nwatch = true\n'))
    assert declared.source == str(tmp_path / "drop")
    first = _tick_sensor(instance, declared)
    [request] = _tick_sensor(instance, declared, first.cursor).run_requests
    assert request.run_config["ops"]["raw_file"]["config"]["lists"] == ["vip"]
    assert _run(instance, request).success


# --- SFTP ----------------------------------------------------------------------------------------------

def test_sftp_pulls_on_a_schedule_and_watches_a_folder(tmp_path, sftp, instance):
    (sftp.root / "nightly.csv").write_bytes(CSV)
    (sftp.root / "drop" / "vip").mkdir(parents=True)
    (sftp.root / "drop" / "vip" / "c.csv").write_bytes(b"email\ncy@example.com\n")
    path = _declare(tmp_path, f'[nightly]\nsource = "{sftp.url}{sftp.root}/nightly.csv"\n'
                              'schedule = "0 2 * * *"\nlists = ["partners"]\n\n'
                              f'[drop]\nsource = "{sftp.url}{sftp.root}/drop/"\nwatch = true\n')
    declared, refused = sources.load(path, is_valid_cron_string)
    assert refused == {}
    request = _tick_schedule(instance, declared["nightly"])
    assert _run(instance, request).success
    assert isinstance(_tick_schedule(instance, declared["nightly"]), dg.SkipReason)
    first = _tick_sensor(instance, declared["drop"])
    [watched] = _tick_sensor(instance, declared["drop"], first.cursor).run_requests
    assert watched.run_config["ops"]["raw_file"]["config"]["source"] == f"{sftp.url}{sftp.root}/drop/vip/c.csv"
    assert _run(instance, watched).success
    assert query("SELECT email, list FROM subscriptions ORDER BY email") == [
        ("ann@example.com", "partners"), ("bob@example.com", "partners"), ("cy@example.com", "vip")]


def test_an_sftp_server_with_another_host_key_is_refused(tmp_path, sftp, monkeypatch):
    (sftp.root / "a.csv").write_bytes(CSV)
    other = tmp_path / "known_hosts"
    other.write_text("[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    monkeypatch.setenv("MAIL_PIPELINE_SFTP_KNOWN_HOSTS", str(other))
    with pytest.raises(MailPipelineError, match="cannot be read: .*host key"):
        sources.fingerprint(f"{sftp.url}{sftp.root}/a.csv")


# --- exports delivered ---------------------------------------------------------------------------------

def _exported(tmp_path, out: str) -> dict:
    from assets.exports import named_export_asset
    from assets.resources import StoreResource
    from mail_pipeline import named_exports
    from tests.helpers import run_import
    source = tmp_path / "in.csv"
    source.write_bytes(CSV)
    run_import(source, lists=["news"])
    declarations = tmp_path / "exports.toml"
    declarations.write_text(f'[weekly]\nlists = ["news"]\nout = "{out}"\n')
    [(name, options)] = named_exports.load(declarations).items()
    result = dg.materialize([named_export_asset(name, options)], resources={"store": StoreResource()})
    assert result.success
    [event] = result.get_asset_materialization_events()
    return event.materialization.metadata


def test_a_named_export_lands_in_the_bucket_whole_with_its_checksum(tmp_path, s3):
    metadata = _exported(tmp_path, f"s3://{s3.bucket}/exports/weekly.csv")
    data = s3.get("exports/weekly.csv")
    assert metadata["sha256"].value == hashlib.sha256(data).hexdigest()
    assert metadata["path"].value == f"s3://{s3.bucket}/exports/weekly.csv"
    assert metadata["row_count"].value == 2 and data.startswith(b"email,name,status")
    assert s3.keys() == ["exports/weekly.csv"]  # the temporary object is gone


def test_a_named_export_lands_on_the_sftp_server(tmp_path, sftp):
    metadata = _exported(tmp_path, f"{sftp.url}{sftp.root}/out/weekly.csv")
    data = (sftp.root / "out" / "weekly.csv").read_bytes()
    assert metadata["sha256"].value == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in (sftp.root / "out").iterdir()) == ["weekly.csv"]


def test_the_export_command_delivers_to_a_bucket_too(tmp_path, s3, mail_home):
    from tests.helpers import cli
    source = tmp_path / "in.csv"
    source.write_bytes(CSV)
    assert cli("import", str(source), "--list", "news", home=mail_home).returncode == 0
    result = cli("export", "--out", f"s3://{s3.bucket}/all.csv", "--json", home=mail_home)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["path"] == f"s3://{s3.bucket}/all.csv"
    assert document["sha256"] == hashlib.sha256(s3.get("all.csv")).hexdigest()


def test_the_import_command_takes_an_s3_url(tmp_path, s3, mail_home):
    from tests.helpers import cli
    s3.put("drop/list.csv", CSV)
    result = cli("import", f"s3://{s3.bucket}/drop/list.csv", "--list", "news", "--json", home=mail_home)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stats"]["subscribers"]["added"] == 2


def test_a_bad_export_location_is_refused_naming_the_export(tmp_path):
    from mail_pipeline import named_exports
    declarations = tmp_path / "exports.toml"
    declarations.write_text('[weekly]\nout = "sftp:///nohost"\n')
    with pytest.raises(MailPipelineError, match="named export 'weekly' in .*: invalid out 'sftp:///nohost'"):
        named_exports.load(declarations)


# --- unreachable servers --------------------------------------------------------------------------------

def test_an_unreachable_server_is_one_sentence(tmp_path, s3, instance, monkeypatch):
    closed = free_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    path = _declare(tmp_path, '[signups]\nsource = "s3://gone/signups/"\nwatch = true\n\n'
                              '[nightly]\nsource = "s3://gone/k.csv"\nschedule = "0 2 * * *"\n\n'
                              f'[far]\nsource = "sftp://nobody@127.0.0.1:{closed}/data/"\nwatch = true\n')
    declared, _ = sources.load(path, is_valid_cron_string)
    for name in ("signups", "far"):
        result = _tick_sensor(instance, declared[name])
        said = result.skip_reason.skip_message
        assert result.run_requests == [] and said.startswith(f"source {name!r}: ")
        assert "cannot be read" in said and "\n" not in said
    skipped = _tick_schedule(instance, declared["nightly"])
    assert skipped.skip_message.startswith("source 'nightly': s3://gone/k.csv cannot be read: ")
    assert "\n" not in skipped.skip_message
    monkeypatch.setattr(download, "RETRY_DELAYS", (0.01, 0.01))
    with pytest.raises(MailPipelineError) as failed:
        download.download("s3://gone/k.csv", tmp_path / "k.csv")
    assert str(failed.value).startswith("download failed after 3 attempts: s3://gone/k.csv: ")
    assert "\n" not in str(failed.value)
