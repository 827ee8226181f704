"""Hostile and careless clients against a real `mail-pipeline serve`: bodies that are not what
they claim, uploads over the cap, file names that try to leave the home, a multipart bomb, a
client that stalls mid-upload. After each, the server keeps serving and nothing is left under
`<home>/uploads/.incoming/`. (A stop by SIGTERM, daemon included, is asserted by the `server`
fixture's teardown, for every module.)"""
import base64
import http.client
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.api_server import ROOT, Server, free_port, running_server, server, wait_for  # noqa: F401

PARAMS = json.dumps({"mode": "subscribe", "lists": [1]})


def still_serving(server: Server) -> None:
    assert server.healthy(), f"the server stopped answering /api/health:\n{server.log_tail()}"
    assert server.curl(*server.auth(), "/api/import/subscribers").status == 200


def nothing_left(server: Server, ids_before: list[int]) -> None:
    assert server.incoming() == [], f"left in uploads/.incoming: {server.incoming()}"
    assert server.import_ids() == ids_before, "an import folder was made"


def basic(server: Server, name: str = "full") -> str:
    return "Basic " + base64.b64encode(f"{name}:{server.tokens[name]}".encode()).decode()


def multipart(parts: list[tuple], boundary: str = "XyZzY-boundary") -> tuple[bytes, str]:
    """(body, content type) of a form: parts are (name, value) or (name, value, filename)."""
    out = bytearray()
    for part in parts:
        name, value = part[0], part[1]
        value = value.encode() if isinstance(value, str) else value
        disposition = f'form-data; name="{name}"' + (f'; filename="{part[2]}"' if len(part) > 2 else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if len(part) > 2:
            out += b"Content-Type: text/csv\r\n"
        out += b"\r\n" + value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def post_raw(server: Server, path: str, body: bytes, content_type: str, timeout: float = 60):
    """(status, parsed JSON body, seconds) of a POST sent with http.client."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    began = time.monotonic()
    try:
        conn.request("POST", path, body=body, headers={"Authorization": basic(server),
                                                        "Content-Type": content_type})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, json.loads(data), time.monotonic() - began


def listmonk_status(server: Server) -> dict:
    return server.curl(*server.auth(), "/api/import/subscribers").json()["data"]


def idle(server: Server) -> None:
    wait_for(lambda: listmonk_status(server)["status"] not in ("importing", "stopping"), 120, 0.5,
             "the listmonk import to end")


# --- bodies that are not what they should be ------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["-H", "Content-Type: application/json", "--data-binary", PARAMS],
    ["-H", "Content-Type: text/plain", "--data-binary", "email\na@b.example.com\n"],
    ["-H", "Content-Type: multipart/form-data", "--data-binary", "no boundary here"],
    ["-H", "Content-Type: multipart/form-data; boundary=zz", "--data-binary", "--zz\r\ngarbage"],
    ["-X", "POST"],
], ids=["json", "text", "no-boundary", "broken-multipart", "empty"])
def test_a_body_that_is_not_a_form_is_400(server, args):
    ids = server.import_ids()
    reply = server.curl(*server.auth(), *args, "/api/import/subscribers")
    assert reply.status == 400, reply
    assert set(reply.json()) == {"message"} and reply.json()["message"], reply
    nothing_left(server, ids)
    still_serving(server)


def test_a_form_without_a_file_or_params_part_is_400(server, tmp_path):
    csv = tmp_path / "ok.csv"
    csv.write_text("email\nform@hostile.example.com\n")
    ids = server.import_ids()
    cases = {
        "no file": ["--form-string", f"params={PARAMS}"],
        "no params": ["-F", f"file=@{csv}"],
        "params not JSON": ["-F", f"file=@{csv}", "--form-string", "params={mode: subscribe"],
        "params an array": ["-F", f"file=@{csv}", "--form-string", "params=[1, 2]"],
        "params deeply nested": ["-F", f"file=@{csv}", "--form-string", "params=" + "[" * 100_000],
        "unknown param": ["-F", f"file=@{csv}", "--form-string", 'params={"mode": "subscribe", "lists": [1], "x": 1}'],
        "two files": ["-F", f"file=@{csv}", "-F", f"file=@{csv}", "--form-string", f"params={PARAMS}"],
    }
    for what, args in cases.items():
        reply = server.curl(*server.auth(), *args, "/api/import/subscribers")
        assert reply.status == 400, (what, reply)
        assert set(reply.json()) == {"message"}, (what, reply)
        nothing_left(server, ids)
    still_serving(server)


def test_a_params_part_over_1_mb_is_refused(server, tmp_path):
    csv = tmp_path / "ok.csv"
    csv.write_text("email\nbig-params@hostile.example.com\n")
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"mode": "subscribe", "lists": [1], "pad": "x" * (2 * 1024 * 1024)}))
    ids = server.import_ids()
    reply = server.curl(*server.auth(), "-F", f"file=@{csv}", "-F", f"params=<{params}", "/api/import/subscribers")
    assert reply.status == 413 and set(reply.json()) == {"message"}, reply
    nothing_left(server, ids)
    still_serving(server)


def test_greenarrow_bodies_that_are_not_json(server):
    ids = server.import_ids()
    for raw in (b"\xff\xfe\x00garbage", b"{" * 100_000, b'{"subscriber_import": "x"}' + b" " * 10 + b"}"):
        status, body, _ = post_raw(server, "/ga/api/v2/mailing_lists/1/subscriber_imports", raw, "application/json")
        assert status == 400 and body["success"] is False and body["error_code"] == "invalid_json", body
    nothing_left(server, ids)
    still_serving(server)


# --- too large ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """A second server whose uploads are capped at 1 MB (no daemon: nothing here gets to run)."""
    with running_server(tmp_path_factory.mktemp("small"), "--max-upload-mb", "1", "--daemon", "no") as running:
        yield running


def test_an_upload_over_the_cap_is_413_in_listmonks_shape(small_server, tmp_path):
    server = small_server
    two_mb = tmp_path / "two-mb.csv"
    with open(two_mb, "w") as out:
        out.write("email\n")
        i = 0
        while out.tell() < 2 * 1024 * 1024:
            out.write(f"big{i}@toolarge.example.com\n")
            i += 1
    ids = server.import_ids()
    # With its length declared; sent chunked (no length: the cap is counted as it arrives); and
    # a file just over the cap, whose declared length alone does not give it away.
    one_and_a_half = tmp_path / "one-and-a-half.csv"
    one_and_a_half.write_bytes(two_mb.read_bytes()[: 1536 * 1024])
    for args in (["-F", f"file=@{two_mb}"],
                 ["-H", "Transfer-Encoding: chunked", "-F", f"file=@{two_mb}"],
                 ["-F", f"file=@{one_and_a_half}"]):
        reply = server.curl(*server.auth(), *args, "--form-string", f"params={PARAMS}", "/api/import/subscribers")
        assert reply.status == 413, (args, reply)
        assert reply.json() == {"message": "the upload is larger than the server's limit of 1 MB"}, reply
        wait_for(lambda: server.incoming() == [], 10, 0.2, "the partial upload to be removed")
        nothing_left(server, ids)
        still_serving(server)
    # GreenArrow's JSON body too, in its envelope.
    body = json.dumps({"subscriber_import": {"column_mapping": ["email"],
                                             "file_source": {"type": "json", "content": two_mb.read_text()}}})
    status, answer, _ = post_raw(server, "/ga/api/v2/mailing_lists/1/subscriber_imports", body.encode(),
                                 "application/json")
    assert status == 413 and answer["success"] is False and answer["error_code"] in ("file_too_large", "payload_too_large"), answer
    nothing_left(server, ids)
    # Under the cap it is taken (no daemon here: it stays queued).
    small = tmp_path / "small.csv"
    small.write_text("email\nsmall@toolarge.example.com\n")
    reply = server.curl(*server.auth(), "-F", f"file=@{small}", "--form-string", f"params={PARAMS}",
                        "/api/import/subscribers")
    assert reply.status == 200, reply
    assert server.incoming() == [] and len(server.import_ids()) == len(ids) + 1
    clear(server)


# --- file names -------------------------------------------------------------------------------------

def outside_copies(server: Server, name: str, import_id: int) -> list[Path]:
    """Files called `name` anywhere under the tests' tmp tree or near the repository, but
    outside the import's own folder."""
    own = server.home / "imports" / str(import_id)
    found = [p for p in server.root.parent.rglob(name) if own not in p.parents]
    for base in (ROOT, server.home / "uploads" / ".incoming", own / "upload"):
        for up in range(5):
            candidate = (base / ("../" * up) / name).resolve()
            if candidate.exists() and own not in candidate.parents:
                found.append(candidate)
    return found


def test_a_file_name_with_dot_dots_is_only_a_label(server, tmp_path):
    idle(server)
    csv = tmp_path / "plain.csv"
    csv.write_text("email\nevil@names.example.com\n")
    ids = server.import_ids()
    reply = server.curl(*server.auth(), "-F", f"file=@{csv};filename=../../evil.csv",
                        "--form-string", f"params={PARAMS}", "/api/import/subscribers")
    assert reply.status == 200, reply
    assert reply.json()["data"]["name"] == "evil.csv"
    [import_id] = [i for i in server.import_ids() if i not in ids]
    idle(server)
    assert listmonk_status(server) == {"name": "evil.csv", "total": 1, "imported": 1, "status": "finished"}
    assert (server.home / "imports" / str(import_id) / "upload" / "evil.csv").is_file()
    assert outside_copies(server, "evil.csv", import_id) == []
    assert server.incoming() == []
    still_serving(server)


def clear(server: Server) -> None:
    """Stop the current listmonk import (queued: withdrawn at once) and clear it."""
    for _ in range(3):
        if listmonk_status(server)["status"] == "none":
            return
        assert server.curl(*server.auth(), "-X", "DELETE", "/api/import/subscribers").status == 200
        time.sleep(0.2)
    assert listmonk_status(server)["status"] == "none"


@pytest.mark.parametrize("filename", ["..", ".", "../..", "a/..", "é" * 200 + ".csv", "a" * 251 + ".csv",
                                      "x\x01y.csv", "C:\\Users\\me\\list.csv"],
                         ids=["dotdot", "dot", "dotdot-dotdot", "trailing-dotdot", "long-utf8", "255-bytes",
                              "control", "windows-path"])
def test_any_file_name_is_taken_or_refused_cleanly(small_server, tmp_path, filename):
    """A name that cannot be a file name here (`..`, `.`, over 255 bytes) must not crash the
    request nor leave the upload behind: the file is kept in the import's folder, under a name of
    the server's own if need be. (On the server without a daemon: the import stays queued, and
    is withdrawn after.)"""
    server = small_server
    clear(server)
    content = b"email\nodd-name@names.example.com\n"
    ids = server.import_ids()
    boundary = "odd-name-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n{PARAMS}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: text/csv\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    status, answer, _ = post_raw(server, "/api/import/subscribers", body, f"multipart/form-data; boundary={boundary}")
    assert status in (200, 400), (status, answer, server.log_tail(5))
    if status == 200:
        assert answer["data"]["status"] == "importing"
        [import_id] = [i for i in server.import_ids() if i not in ids]
        [kept] = list((server.home / "imports" / str(import_id) / "upload").iterdir())
        assert kept.is_file() and kept.read_bytes() == content
        assert kept.name == answer["data"]["name"] and "/" not in kept.name and kept.name not in (".", "..")
        clear(server)
    else:
        assert server.import_ids() == ids
    assert server.incoming() == [], f"left in uploads/.incoming: {server.incoming()}"
    still_serving(server)


def test_greenarrow_upload_directory_cannot_leave_the_uploads_folder(server):
    ids = server.import_ids()
    (server.root / "secret.csv").write_text("email\nsecret@outside.example.com\n")
    for filename in ("../../secret.csv", str(server.root / "secret.csv"), "../secret.csv", ".incoming/../../x",
                     "", "nul\x00.csv"):
        body = json.dumps({"subscriber_import": {"column_mapping": ["email"],
                                                 "file_source": {"type": "upload_directory", "filename": filename}}})
        status, answer, _ = post_raw(server, "/ga/api/v2/mailing_lists/1/subscriber_imports", body.encode(),
                                     "application/json")
        assert status in (404, 422) and answer["success"] is False, (filename, status, answer)
    assert server.import_ids() == ids
    still_serving(server)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/list.csv", "http://localhost/list.csv",
                                 "http://169.254.169.254/latest/meta-data", "http://10.0.0.8/x.csv",
                                 "http://[::1]/x.csv"])
def test_a_url_source_on_the_servers_own_network_is_refused(server, url):
    """A client may not make the server fetch its loopback, private network or cloud metadata
    (serve --allow-private-urls lets it)."""
    ids = server.import_ids()
    body = json.dumps({"subscriber_import": {"column_mapping": ["email"],
                                             "file_source": {"type": "url", "url": url}}})
    status, answer, _ = post_raw(server, "/ga/api/v2/mailing_lists/1/subscriber_imports", body.encode(),
                                 "application/json")
    assert status == 422 and answer["error_code"] == "validation_failed", answer
    assert "private or local address" in answer["error_message"]
    assert server.import_ids() == ids


# --- a multipart bomb --------------------------------------------------------------------------------

def test_a_multipart_bomb_is_refused_quickly(server):
    ids = server.import_ids()
    parts = [(f"f{i}", "x") for i in range(5000)] + [("params", PARAMS), ("file", "email\nbomb@x.example.com\n", "b.csv")]
    body, content_type = multipart(parts)
    status, answer, took = post_raw(server, "/api/import/subscribers", body, content_type)
    assert status == 400 and set(answer) == {"message"}, answer
    assert took < 5, f"refusing 5000 parts took {took:.1f} s"
    # Many parts of one name, and a file part first: the same.
    body, content_type = multipart([("file", "email\nbomb@x.example.com\n", "b.csv")] + [("params", PARAMS)] * 5000)
    status, answer, took = post_raw(server, "/api/import/subscribers", body, content_type)
    assert status == 400 and took < 5, (status, answer, took)
    nothing_left(server, ids)
    still_serving(server)


# --- a client that stalls ---------------------------------------------------------------------------

def stalled_upload(port: int, authorization: str, declared: int = 10_000_000) -> socket.socket:
    """A socket that sent the headers and the start of a file part, then stops sending."""
    boundary = "stall-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n{PARAMS}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.csv\"\r\n"
            f"Content-Type: text/csv\r\n\r\nemail\n").encode() + b"slow@stall.example.com\n" * 400
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall((f"POST /api/import/subscribers HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  f"Authorization: {authorization}\r\n"
                  f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                  f"Content-Length: {declared}\r\n\r\n").encode() + head)
    return sock


def test_a_stalled_upload_does_not_hold_up_other_requests_and_leaves_nothing(server, tmp_path):
    idle(server)
    ids = server.import_ids()
    sock = stalled_upload(server.port, basic(server))
    try:
        wait_for(lambda: server.incoming(), 10, 0.1, "the stalled upload to be spooled")
        for path in ("/api/health", "/api/import/subscribers", "/ga/api/v2/subscriber_imports?per_page=1"):
            began = time.monotonic()
            reply = server.curl(*server.auth(), "--max-time", "5", path)
            assert reply.status == 200 and time.monotonic() - began < 2, (path, reply)
        # An import of another client goes through meanwhile.
        csv = tmp_path / "meanwhile.csv"
        csv.write_text("email\nmeanwhile@stall.example.com\n")
        reply = server.curl(*server.auth(), "-F", f"file=@{csv}", "--form-string", f"params={PARAMS}",
                            "/api/import/subscribers", timeout=20)
        assert reply.status == 200 and reply.json()["data"]["name"] == "meanwhile.csv", reply
        idle(server)
        assert listmonk_status(server)["status"] == "finished"
        assert len(server.incoming()) == 1  # (the stalled one, still arriving)
    finally:
        sock.close()  # the client goes away mid-body
    wait_for(lambda: server.incoming() == [], 15, 0.2, "the abandoned upload to be removed")
    assert len(server.import_ids()) == len(ids) + 1
    still_serving(server)


def test_the_chunk_timeout_answers_408_and_removes_the_partial_upload(mail_home):
    """The stall itself, cut off: the same application as `mail-pipeline serve`, on uvicorn in
    this process with a 2 s timeout (`serve --chunk-timeout 2`)."""
    import uvicorn

    from mail_pipeline import catalog, home
    from service.api.app import create_app
    from service.api.uploads import Limits

    secret = catalog.create_token("full", ["subscribers:import"])
    catalog.create_list("newsletter")
    port = free_port()
    app = create_app(Limits(chunk_timeout=2))
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: web.started, 30, 0.1, "the in-process server to start")
        incoming = home.uploads_dir() / ".incoming"
        authorization = "Basic " + base64.b64encode(f"full:{secret}".encode()).decode()
        sock = stalled_upload(port, authorization)
        try:
            wait_for(lambda: incoming.is_dir() and list(incoming.iterdir()), 10, 0.1, "the upload to be spooled")
            began = time.monotonic()
            sock.settimeout(20)
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            took = time.monotonic() - began
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {
            "message": "the request body stalled: no data for 2 seconds"}
        assert took < 10, took
        assert list(incoming.iterdir()) == []
        assert not home.imports_dir().is_dir() or list(home.imports_dir().iterdir()) == []
    finally:
        web.should_exit = True
        thread.join(15)


# --- the web page's forms, from elsewhere ------------------------------------------------------------

def test_the_pages_forms_refuse_another_origin(server, tmp_path):
    """The page's cookie is SameSite=Strict; a form or script on another origin of the same site
    (another port, a sibling subdomain) is refused by its Origin, even with the visitor's key."""
    ids = server.import_ids()
    csv = tmp_path / "x.csv"
    csv.write_text("email\ncsrf@example.com\n")
    cookie = ("-H", f"Cookie: mail_pipeline_key=token full:{server.tokens['full']}")
    form = ("-F", f"file=@{csv}", "--form-string", 'lists=["newsletter"]')
    for origin in ("http://127.0.0.1:1", "http://evil.example", "null"):
        reply = server.curl("-X", "POST", "/ui/imports", *cookie, "-H", f"Origin: {origin}", *form)
        assert reply.status == 403, (origin, reply)
    reply = server.curl("-X", "POST", "/ui/imports", *cookie, "-H", "Sec-Fetch-Site: same-site", *form)
    assert reply.status == 403, reply
    assert server.import_ids() == ids
    # the page's own origin is taken
    reply = server.curl("-X", "POST", "/ui/imports", *cookie, "-H", f"Origin: {server.base_url}", *form)
    assert reply.status == 201, reply
