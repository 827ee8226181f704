"""Every test gets its own home folder, so stores, imports and Dagster instances never mix. Tests
that take `backend` run twice: on the embedded instance, and on a deployer's instance backed by a
real PostgreSQL server (deploy/dagster.yaml, on a database of its own)."""
import os
import shutil
import textwrap
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def mail_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MAIL_PIPELINE_HOME", str(home))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return home


@pytest.fixture
def write_csv(tmp_path):
    """Write a CSV from an indented literal and return its path."""
    def write(text: str, name: str = "input.csv", encoding: str = "utf-8") -> Path:
        path = tmp_path / name
        path.write_bytes(textwrap.dedent(text).lstrip("\n").encode(encoding))
        return path
    return write


def postgres_server() -> str:
    """The test server's URL (`eval "$(.ci/postgres)"` starts one); CI must have it."""
    url = os.environ.get("MAIL_PIPELINE_TEST_POSTGRES")
    if not url:
        if os.environ.get("MAIL_PIPELINE_REQUIRE_POSTGRES"):
            pytest.fail("MAIL_PIPELINE_TEST_POSTGRES is not set: .ci/run starts the server")
        pytest.skip('no PostgreSQL server: eval "$(.ci/postgres)" starts one')
    return url


@pytest.fixture
def postgres_instance(tmp_path, monkeypatch) -> Path:
    """A deployer's Dagster instance: deploy/dagster.yaml as shipped, on a new database of the
    test server; DAGSTER_HOME names it. Returns its folder."""
    import psycopg2
    url = urlsplit(postgres_server())
    database = f"mp_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(postgres_server())
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {database}")
    folder = tmp_path / "dagster_home"
    folder.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", folder / "dagster.yaml")
    for name, value in (("DAGSTER_PG_HOST", url.hostname), ("DAGSTER_PG_PORT", str(url.port or 5432)),
                        ("DAGSTER_PG_USER", url.username or "postgres"),
                        ("DAGSTER_PG_PASSWORD", url.password or ""), ("DAGSTER_PG_DB", database)):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(folder))
    # Its schema made once, before any process of the test: processes that create it together
    # race (a deployment runs `dagster instance migrate` once, docs/deploy.md).
    import dagster as dg
    dg.DagsterInstance.get().dispose()
    yield folder
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    admin.close()


@pytest.fixture(params=["embedded", "postgres"])
def backend(request) -> str:
    """Run the test on the embedded instance, then on the Postgres-backed one."""
    if request.param == "postgres":
        request.getfixturevalue("postgres_instance")
    return request.param
