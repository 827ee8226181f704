"""The web page (spec §7, `GET /`) as a person uses it: a real `mail-pipeline serve` (with the
Dagster daemon it starts) driven by headless Chromium through Selenium. Sign in, upload the
sample, preview it, start it, watch it finish, read its log and follow its run's link."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import cli

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "subscribers.csv"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DAGSTER_URL = "http://127.0.0.1:3999"  # never opened: only the run link is checked


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def browser():
    """Headless Chromium with Debian's chromedriver, named explicitly: Selenium Manager (which
    downloads drivers) is never asked."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        if os.environ.get("MAIL_PIPELINE_REQUIRE_BROWSER"):
            pytest.fail("chromium and chromium-driver are not installed: .ci/run installs them")
        pytest.skip("no headless browser: apt-get install chromium chromium-driver")
    try:
        from selenium import webdriver
    except ImportError:
        if os.environ.get("MAIL_PIPELINE_REQUIRE_BROWSER"):
            pytest.fail("selenium is not installed: pip install selenium")
        pytest.skip("selenium is not installed")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,2000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def server(mail_home, tmp_path):
    """`mail-pipeline serve` on a free port of loopback, up once /api/health answers; yields
    (base URL, process). Whatever the test left running is stopped at the end."""
    port = _free_port()
    env = dict(os.environ, MAIL_PIPELINE_HOME=str(mail_home))
    env.pop("DAGSTER_HOME", None)
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port),
                             "--dagster-url", DAGSTER_URL + "/"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, "the server stopped:\n" + (tmp_path / "serve.log").read_text()
            try:
                if _get(base + "/api/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not answer /api/health in 90 s"
            time.sleep(0.5)
        yield base, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        else:
            try:  # its daemon and run workers, had it left any
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait(driver, condition, timeout: float, what: str):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition, f"waited {timeout} s for {what}")


def _sign_in(driver, name: str, token: str) -> None:
    from selenium.webdriver.common.by import By
    driver.find_element(By.ID, "name").clear()
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin-button").click()


def _table(driver, table_id: str) -> list[list[str]]:
    from selenium.webdriver.common.by import By
    return [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")]


def test_page_previews_starts_and_follows_an_import(mail_home, server, browser):
    from selenium.webdriver.common.by import By
    base, proc = server
    made = json.loads(cli("tokens", "create", "web", "--permission", "subscribers:import", "--json",
                          home=mail_home).stdout)
    driver = browser

    # Without a key: the sign-in form; the page's routes refuse in their plain shape.
    driver.get(base + "/")
    assert driver.find_element(By.ID, "signin").is_displayed()
    status, body = _get(base + "/ui/imports/1")
    assert status in (401, 403) and "message" in json.loads(body)

    # A wrong token: the form again, with a plain error, and no cookie.
    _sign_in(driver, "web", made["token"] + "x")
    error = driver.find_element(By.CSS_SELECTOR, ".error")
    assert "not accepted" in error.text
    assert driver.get_cookie("mail_pipeline_key") is None

    _sign_in(driver, "web", made["token"])
    _wait(driver, lambda d: d.find_elements(By.ID, "key-name"), 10, "the page")
    assert driver.find_element(By.ID, "key-name").text == "web"
    cookie = driver.get_cookie("mail_pipeline_key")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # The dry run: counts, the column mapping and the failed rows; nothing imported.
    driver.find_element(By.ID, "file").send_keys(str(SAMPLE))
    driver.find_element(By.ID, "new-list").send_keys("web-list")
    driver.find_element(By.ID, "preview-button").click()
    _wait(driver, lambda d: d.find_element(By.ID, "preview").is_displayed()
          or d.find_element(By.ID, "error").is_displayed(), 60, "the preview")
    assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(By.ID, "error").text
    counts = {row[0]: int(row[1]) for row in _table(driver, "preview-counts")}
    assert counts == {"added": 4, "failed": 2, "skipped_duplicate": 1}
    assert "7 records" in driver.find_element(By.ID, "preview-summary").text
    assert "web-list" in driver.find_element(By.ID, "preview-summary").text
    mapping = driver.find_element(By.ID, "preview-mapping").text
    assert "column 'email' → email" in mapping and "column 'attributes' → attributes" in mapping
    failed = _table(driver, "preview-failed")
    assert [row[0] for row in failed] == ["j ane@example.com", "chloe@example.net"]
    assert "not a JSON object" in failed[1][-1]
    assert json.loads(cli("imports", "--json", home=mail_home).stdout)["num_records"] == 0
    assert not list((mail_home / "previews").iterdir())  # the preview's files are gone

    # Start it and watch it: the daemon the server started runs it.
    driver.find_element(By.ID, "start-button").click()
    _wait(driver, lambda d: d.find_element(By.ID, "progress").is_displayed()
          or d.find_element(By.ID, "error").is_displayed(), 30, "the import to be created")
    assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(By.ID, "error").text
    _wait(driver, lambda d: d.find_element(By.ID, "import-state").text
          in ("finished", "failed", "cancelled"), 150, "the import to end")
    assert driver.find_element(By.ID, "import-state").text == "finished"
    import_id = driver.find_element(By.ID, "import-id").text
    assert driver.find_element(By.ID, "import-records").text == "7 of 7 records processed"
    _wait(driver, lambda d: d.find_element(By.ID, "import-log").text, 10, "the log")
    log = driver.find_element(By.ID, "import-log").text
    assert "column 'email' → email" in log and "imported 7 records: added 4, failed 2, skipped_duplicate 1" in log
    assert {row[0]: int(row[1]) for row in _table(driver, "import-counts")} == counts
    links = {a.text: a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#import-logs a")}
    assert set(links) == {"log", "added", "failed", "skipped_duplicate"}
    assert links["failed"] == f"{base}/ui/imports/{import_id}/logs/failed"
    assert not list((mail_home / "uploads" / ".incoming").iterdir())  # the upload moved into the import

    # What the command line sees: the import, made over the page by the key `web`.
    listing = json.loads(cli("imports", "--json", home=mail_home).stdout)
    assert [d["id"] for d in listing["data"]] == [import_id]
    document = json.loads(cli("imports", "show", import_id, "--json", home=mail_home).stdout)
    assert document["state"] == "finished" and document["lists"] == ["web-list"]
    assert driver.find_element(By.ID, "run-link").get_attribute("href") == \
        f"{DAGSTER_URL}/runs/{document['run_id']}"
    from service import jobs
    instance = jobs.instance()
    try:
        tags = instance.get_run_by_id(document["run_id"]).tags
    finally:
        instance.dispose()
    assert tags["mail_pipeline/api"] == "page" and tags["mail_pipeline/api_key"] == "web"

    # A category's log opens as text (with the page's cookie); the new list is offered now.
    driver.get(links["failed"])
    assert "j ane@example.com" in driver.find_element(By.TAG_NAME, "body").text
    driver.get(base + "/")
    boxes = driver.find_elements(By.CSS_SELECTOR, "input[name=list]")
    assert [box.get_attribute("value") for box in boxes] == ["web-list"]

    # Signing out clears the key.
    driver.find_element(By.CSS_SELECTOR, "header button").click()
    _wait(driver, lambda d: d.find_elements(By.ID, "signin"), 10, "the sign-in form")
    assert driver.get_cookie("mail_pipeline_key") is None

    # SIGTERM: the server finishes, stopping its daemon.
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=45)  # (requests in flight: up to 10 s; the daemon's own stop, meanwhile)


def test_sigterm_stops_the_server_and_its_daemon(server):
    _, proc = server
    daemons = [pid for pid in _children(proc.pid)
               if b"dagster._daemon" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(daemons) == 1, "serve started no daemon of its own"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=45)  # (requests in flight: up to 10 s; the daemon's own stop, meanwhile)
    deadline = time.monotonic() + 20
    while _alive(daemons[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(daemons[0]), "the server exited but left its Dagster daemon running"
