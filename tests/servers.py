"""Real servers on loopback for the declared sources' tests: S3 through moto's standalone server
(a real S3 HTTP API that boto3 and s3fs reach through AWS_ENDPOINT_URL), and SFTP through
Debian's openssh-server, started with a throwaway host key, a throwaway user key and a config
of its own. Without sshd the SFTP tests are skipped, unless MAIL_PIPELINE_REQUIRE_SFTP says
they must run (CI sets it)."""
import getpass
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api_server import free_port

SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/bin/sshd") if os.path.exists(p)), None)


@dataclass
class S3:
    endpoint: str
    bucket: str

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint)

    def put(self, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=self.bucket, Key=key, Body=data)

    def get(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def keys(self) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return sorted(item["Key"] for item in listed)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch) -> S3:
    """A new bucket, and the standard AWS environment pointing at the server."""
    for name, value in (("AWS_ENDPOINT_URL", s3_endpoint), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    store = S3(s3_endpoint, f"mail-{uuid.uuid4().hex[:10]}")
    store.client().create_bucket(Bucket=store.bucket)
    return store


@dataclass
class SFTP:
    url: str     # sftp://user@127.0.0.1:port
    root: Path   # a folder of the server's, for the test's files


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """sshd on a free loopback port, its keys made for the session, logging in the current user
    by key only (root in CI)."""
    if SSHD is None:
        if os.environ.get("MAIL_PIPELINE_REQUIRE_SFTP"):
            pytest.fail("sshd is not installed: .ci/run installs openssh-server")
        pytest.skip("no sshd: apt-get install openssh-server")
    folder = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True)
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {folder / 'host_key'}
PidFile {folder / 'sshd.pid'}
AuthorizedKeysFile {folder / 'user_key.pub'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
""")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # (its privilege separation folder)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, "sshd stopped"
            time.sleep(0.2)
    host_key = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    yield folder, port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def sftp(sshd, tmp_path, monkeypatch) -> SFTP:
    """The server's key and known host in the environment, and a folder of the test's."""
    folder, port = sshd
    monkeypatch.setenv("MAIL_PIPELINE_SFTP_KEY", str(folder / "user_key"))
    monkeypatch.setenv("MAIL_PIPELINE_SFTP_KNOWN_HOSTS", str(folder / "known_hosts"))
    root = tmp_path / "sftp"
    root.mkdir()
    return SFTP(f"sftp://{getpass.getuser()}@127.0.0.1:{port}", root)
