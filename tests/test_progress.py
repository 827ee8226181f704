"""The command line's progress: bars with rows, rate and time left on a terminal, plain lines
elsewhere; both read only what the stages wrote in the import's folder."""
import io
import threading

from service import progress
from tests.helpers import run_import


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _watch_once(import_id: str, stream) -> str:
    done = threading.Event()
    timer = threading.Timer(progress.INTERVAL * 2.5, done.set)
    timer.start()
    progress.watch(import_id, done, stream)
    return stream.getvalue()


def test_a_terminal_gets_bars_with_rows_and_a_pipe_gets_lines(mail_home, tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("email\n" + "".join(f"u{i}@example.com\n" for i in range(1000)))
    import_id, _ = run_import(csv, lists=["news"])
    shown = _watch_once(import_id, _Terminal())
    assert "reading" in shown and "merging" in shown and "1000/1000" in shown and "rows" in shown
    plain = _watch_once(import_id, io.StringIO())
    assert plain.strip() == f"import {import_id}: importing, batch 1/1, 1000/1000 records"


def test_a_download_shows_its_attempts_and_waits(mail_home, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    from mail_pipeline.layout import Folder
    from mail_pipeline import logs
    folder = Folder.of("7")
    folder.path.mkdir(parents=True)
    (folder.path / "download.csv.partial").write_bytes(b"x" * 2048)
    logs.append_log(folder.path, "attempt 1 failed (HTTP Error 503); trying again in 10 s")
    assert progress.Seen(folder).line("7") == "import 7: attempt 1 failed (HTTP Error 503); trying again in 10 s"
    shown = _watch_once("7", _Terminal())
    assert "downloading" in shown and "trying again in 10 s" in shown
