"""Every test gets its own home folder, so stores, imports and Dagster instances never mix."""
import textwrap
from pathlib import Path

import pytest


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
