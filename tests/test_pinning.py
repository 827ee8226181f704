"""A plain UTF-8 source is pinned by a hard link instead of copied (issue 15): the same bytes are
read, nothing is written twice, and a source that changes afterwards is refused, never read as it
is now. Anything that needs converting (another encoding, a BOM, blank lines before the header)
or cannot be linked (another file system) is copied as before."""
import errno
import os

import pytest

from mail_pipeline import home, pipeline
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.options import build
from tests.helpers import categories

ROWS = "email,name\nana@example.com,Ana\nbo@example.com,Bo\nnot an email,X\n"


def staged(path, **options):
    folder = pipeline.Folder.of(home.new_import_id())
    metadata = pipeline.stage_raw(folder, build({"lists": ["news"], **options}), path)
    return folder, metadata


def test_a_plain_utf8_file_is_linked_and_imports_as_a_copy_would(write_csv):
    path = write_csv(ROWS)
    folder, metadata = staged(path)
    assert metadata["linked"] is True
    assert os.stat(folder.source).st_ino == os.stat(path).st_ino
    assert metadata["size"] == path.stat().st_size and metadata["mtime_ns"] == path.stat().st_mtime_ns
    assert "pinned by a hard link" in (folder.path / "logs" / "log.txt").read_text()
    pipeline.validate_import(folder)
    pipeline.merge_import(folder, home.database_path())
    assert categories(pipeline.write_import_logs(folder)) == {"added": 2, "failed": 1}
    path.unlink()  # the user's file goes; the import's pinned bytes stay
    assert folder.source.read_text() == ROWS


@pytest.mark.parametrize("text, encoding", [("\ufeff" + ROWS, "utf-8"), ("\n,\n" + ROWS, "utf-8"),
                                            (ROWS.replace("Bo", "Bé"), "cp1252")])
def test_a_file_that_needs_converting_is_copied(write_csv, text, encoding):
    path = write_csv(text, encoding=encoding)
    folder, metadata = staged(path, encoding=encoding)
    assert metadata["linked"] is False
    assert os.stat(folder.source).st_ino != os.stat(path).st_ino
    assert folder.source.read_text(encoding="utf-8") == ROWS.replace("Bo", "Bé" if encoding == "cp1252" else "Bo")


def test_a_file_on_another_file_system_is_copied(write_csv, monkeypatch):
    def cross_device(*args):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "link", cross_device)  # (the error os.link gives across file systems)
    path = write_csv(ROWS)
    folder, metadata = staged(path)
    assert metadata["linked"] is False and folder.source.read_text() == ROWS
    path.write_text("email\nother@example.com\n")  # a copy is not affected
    assert folder.source.read_text() == ROWS


def test_a_linked_file_that_changes_before_it_is_read_is_refused(write_csv):
    path = write_csv(ROWS)
    folder, metadata = staged(path)
    with open(path, "a") as f:  # appended to in place: the link sees it
        f.write("late@example.com,Late\n")
    with pytest.raises(MailPipelineError, match=r"changed after it was staged .* import it again$"):
        pipeline.validate_import(folder)
    assert not pipeline.parts(folder.valid)


def test_a_linked_file_replaced_by_a_new_one_keeps_the_staged_bytes(write_csv):
    path = write_csv(ROWS)
    folder, _ = staged(path)
    replacement = path.with_name("new.csv")
    replacement.write_text("email\nother@example.com\n")
    os.replace(replacement, path)  # as editors save: a new file under the old name
    summary = pipeline.validate_import(folder)
    assert summary["valid"] == 2 and summary["failed"] == 1
