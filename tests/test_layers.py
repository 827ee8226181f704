"""The three layers import one way (core ← definitions ← job service), and the job service on a
deployer's instance: used as it is, never rewritten, the store's pool registered when missing."""
import ast
from pathlib import Path

import pytest

from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> dict[str, set[str]]:
    """Each module of the package → the top-level packages it imports."""
    found = {}
    for path in sorted((ROOT / package).glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[f"{package}/{path.name}"] = names
    return found


@pytest.mark.parametrize("package, forbidden", [
    ("mail_pipeline", {"dagster", "dagster_graphql", "assets", "service"}),
    ("assets", {"service"}),
])
def test_a_layer_never_imports_the_ones_above_it(package, forbidden):
    offending = {module: names & forbidden for module, names in _imports(package).items() if names & forbidden}
    assert offending == {}


def test_a_deployers_instance_is_used_as_it_is(tmp_path, mail_home, monkeypatch):
    dagster_home = tmp_path / "deployed"
    dagster_home.mkdir()
    yaml = "# the deployer's own\nconcurrency:\n  pools:\n    granularity: op\ntelemetry:\n  enabled: false\n"
    (dagster_home / "dagster.yaml").write_text(yaml)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    source = tmp_path / "s.csv"
    source.write_text("email\na@example.com\n")
    assert cli("import", str(source), "--json", home=mail_home).returncode == 0  # (it opens the instance)
    assert (dagster_home / "dagster.yaml").read_text() == yaml  # never rewritten
    assert not (mail_home / "dagster").exists()                  # no embedded instance beside it
    import dagster as dg
    with dg.DagsterInstance.get() as inst:
        [pool] = [p for p in inst.event_log_storage.get_pool_limits() if p.name == "mail_pipeline_store"]
        assert pool.limit == 1
        inst.event_log_storage.set_concurrency_slots("mail_pipeline_store", 2)  # the deployer's choice
    assert cli("imports", "--json", home=mail_home).returncode == 0
    with dg.DagsterInstance.get() as inst:
        assert inst.event_log_storage.get_concurrency_info("mail_pipeline_store").slot_count == 2


def test_a_broken_instance_is_one_sentence(tmp_path, mail_home, monkeypatch):
    dagster_home = tmp_path / "broken"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("run_coordinator: [\n")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    mail_home.mkdir()  # (a read needs a home: it never makes one)
    result = cli("imports", home=mail_home)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: the Dagster instance in {dagster_home} cannot be opened: ")
    assert result.stderr.count("\n") == 1


def test_the_embedded_instance_turns_on_run_monitoring_and_per_op_pools(mail_home):
    from service import jobs
    inst = jobs.instance()
    try:
        assert inst.run_monitoring_enabled
        assert jobs.pools_per_op(inst)
        assert type(inst.run_coordinator).__name__ == "QueuedRunCoordinator"
    finally:
        inst.dispose()


def test_an_instance_that_pools_per_run_refuses_a_command_line_run(tmp_path, mail_home, monkeypatch):
    """Per run, the pool would not hold back a run the command line executes: refused before
    anything is written, in one sentence."""
    dagster_home = tmp_path / "deployed"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # Dagster's defaults
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    source = ROOT / "samples" / "subscribers.csv"
    result = cli("import", str(source), "--list", "news", home=mail_home)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "limits pools per run" in result.stderr and "docs/deploy.md" in result.stderr
    assert not (mail_home / "subscribers.duckdb").exists()


def test_every_launchpad_config_field_has_a_description():
    from assets.definitions import defs

    def undescribed(config_type, where):
        fields = getattr(config_type, "fields", None) or {}
        for name, field in fields.items():
            if not field.description:
                yield f"{where}.{name}"
            yield from undescribed(field.config_type, f"{where}.{name}")

    missing = []
    for job in ("import_job", "export_job", "retention_job", "new_import"):
        ops = defs.resolve_job_def(job).run_config_schema.config_type.fields["ops"].config_type.fields
        for op, field in ops.items():
            config = getattr(field.config_type, "fields", {}).get("config")
            if config is not None:
                missing += list(undescribed(config.config_type, f"{job}.{op}"))
    assert missing == []
