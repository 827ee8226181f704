"""URL sources: http(s) only, at most 200 MB, three attempts (a loopback HTTP server)."""
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mail_pipeline import download, home
from mail_pipeline.errors import MailPipelineError
from tests.helpers import categories, cli, log_lines, query, run_import

CSV = b"email,name\nann@example.com,Ann\nbob@example.com,Bob\n"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(download, "RETRY_DELAYS", (0.01, 0.02))
    state = {"fail": 0, "hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            state["hits"] += 1
            if self.path == "/flaky.csv" and state["fail"] > 0:
                state["fail"] -= 1
                self.send_error(503)
                return
            if self.path == "/huge.csv":
                self.send_response(200)
                self.send_header("Content-Length", str(download.MAX_BYTES + 1))
                self.end_headers()
                return
            if self.path == "/to-ftp":
                self.send_response(302)
                self.send_header("Location", "ftp://example.com/x.csv")
                self.end_headers()
                return
            if self.path in ("/list.csv", "/flaky.csv"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(CSV)))
                self.end_headers()
                self.wfile.write(CSV)
                return
            self.send_error(404)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    httpd.shutdown()


def test_a_url_source_is_downloaded_and_imported(server):
    base, _ = server
    import_id, stats = run_import(None, source=f"{base}/list.csv", lists=["news"])
    assert categories(stats) == {"added": 2}
    assert query("SELECT count(*) FROM subscriptions") == [(2,)]
    assert any(f"downloaded {len(CSV)} bytes" in line for line in log_lines(import_id, "log"))


def test_a_failing_url_is_tried_three_times(server):
    base, state = server
    state["fail"] = 2
    import_id, stats = run_import(None, source=f"{base}/flaky.csv")
    assert categories(stats) == {"added": 2} and state["hits"] == 3
    attempts = [line for line in log_lines(import_id, "log") if "(attempt" in line]
    assert [a.split("(")[1] for a in attempts] == ["attempt 1 of 3)", "attempt 2 of 3)", "attempt 3 of 3)"]
    waits = [line.split(" ", 2)[2] for line in log_lines(import_id, "log") if "trying again" in line]
    assert waits == ["attempt 1 failed (Service Unavailable); trying again in 0 s",
                     "attempt 2 failed (Service Unavailable); trying again in 0 s"]
    state["fail"], state["hits"] = 3, 0
    with pytest.raises(MailPipelineError, match="download failed after 3 attempts: .*Service Unavailable"):
        run_import(None, source=f"{base}/flaky.csv")
    assert state["hits"] == 3


def test_too_large_and_other_schemes_are_refused_at_once(server, mail_home):
    base, state = server
    with pytest.raises(MailPipelineError, match="over the 200 MB limit"):
        run_import(None, source=f"{base}/huge.csv")
    assert state["hits"] == 1  # not retried
    with pytest.raises(MailPipelineError, match="only http and https URLs are downloaded"):
        run_import(None, source=f"{base}/to-ftp")
    result = cli("import", "file:///etc/passwd", home=mail_home)
    assert result.returncode == 2 and "only http and https URLs" in result.stderr
    assert not home.database_path().exists()


def test_the_command_line_imports_a_url_and_greenarrow_url_sources(server, mail_home, tmp_path):
    import json
    base, _ = server
    result = cli("import", f"{base}/list.csv", "--list", "news", "--json", home=mail_home)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["state"] == "finished" and document["stats"]["subscribers"]["added"] == 2
    params = tmp_path / "ga.json"
    params.write_text(json.dumps({"subscriber_import": {
        "column_mapping": ["email", "name"], "overwrite": True,
        "file_source": {"type": "url", "url": f"{base}/list.csv"}}}))
    result = cli("import", "--params", str(params), "--list", "news", "--json", home=mail_home)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stats"]["subscribers"]["updated"] == 2


def test_public_only_refuses_private_hosts_by_name_and_by_the_address_connected_to(server, tmp_path, monkeypatch):
    """Imports over HTTP fetch public hosts only: checked on the name, and again on the address
    actually connected to, so a name that resolves differently the second time (DNS rebinding)
    is refused too."""
    base, _ = server
    url = f"{base}/list.csv"
    with pytest.raises(MailPipelineError, match="private or local address"):
        download.download(url, tmp_path / "a.csv", public_only=True)
    monkeypatch.setattr(download, "_check_public", lambda host, source: None)  # "public" at the check
    with pytest.raises(MailPipelineError, match="connected to 127.0.0.1"):
        download.download(url, tmp_path / "b.csv", public_only=True)
    assert not (tmp_path / "b.csv").exists()
    assert download.download(url, tmp_path / "c.csv") == len(CSV)  # the command line may
