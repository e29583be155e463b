"""Podman "VPS" hosts are real: SSH with the given key only, own hostname and host keys, mail daemons can run.

The first run on a machine builds the images (about 1.5 min together); later runs reuse them.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import secrets
import socket
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from devenv import images
from devenv.podman_hosts import HOST_LABEL, PodmanHostError, PodmanHosts


class KeyPair:
    """A fresh ed25519 key: the paramiko key to log in with and the authorized_keys line."""

    def __init__(self) -> None:
        private = ed25519.Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
        self.pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(pem))
        self.public = (
            private.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120, check=check)


def host_key(container: str) -> paramiko.PKey:
    """The container's own SSH host key, read out of band, so the SSH client can verify the host strictly."""
    _, blob = podman("exec", container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
    return paramiko.Ed25519Key(data=base64.b64decode(blob))


def ssh(ip: str, container: str, key: KeyPair) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.get_host_keys().add(ip, "ssh-ed25519", host_key(container))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(ip, username="root", pkey=key.pkey, look_for_keys=False, allow_agent=False, timeout=10)
    return client


def run(client: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, stdout, stderr = client.exec_command(command, timeout=60)
    out = stdout.read().decode() + stderr.read().decode()
    return stdout.channel.recv_exit_status(), out.strip()


def bridge_subnet() -> ipaddress.IPv4Network:
    (network,) = json.loads(podman("network", "inspect", "podman").stdout)
    return ipaddress.ip_network(network["subnets"][0]["subnet"])


@pytest.fixture(scope="module")
def hosts():
    hosts = PodmanHosts(prefix=f"pm-test-{secrets.token_hex(3)}")
    hosts.ensure_image()
    yield hosts
    hosts.clear()


@pytest.fixture(scope="module")
def mail_hosts():
    hosts = PodmanHosts(prefix=f"pm-test-{secrets.token_hex(3)}", kind="mailhost")
    hosts.ensure_image()
    yield hosts
    hosts.clear()


def test_host_answers_ssh_with_its_key_only_and_goes_away_on_delete(hosts):
    key, stranger = KeyPair(), KeyPair()
    ip = hosts.create("vps-1", [key.public + " ops@test"], hostname="vps-1.penguinmails.test")
    container = hosts.container_name("vps-1")
    assert ipaddress.ip_address(ip) in bridge_subnet()
    assert hosts.list()[container] == ip

    with ssh(ip, container, key) as client:
        assert run(client, "python3 -c 'print(1)'") == (0, "1")
        assert run(client, "hostname") == (0, "vps-1.penguinmails.test")
        assert run(client, "sudo -n true && ip -4 -o addr show eth0")[1].split()[3].startswith(ip + "/")
    with pytest.raises(paramiko.AuthenticationException):
        ssh(ip, container, stranger)

    hosts.delete("vps-1")
    assert container not in hosts.list()
    assert podman("container", "exists", container, check=False).returncode == 1
    hosts.delete("vps-1")  # idempotent
    hosts.delete(container)  # the full name works too


def test_hosts_have_their_own_host_keys_and_list_shows_only_this_prefix(hosts):
    key = KeyPair()
    other = PodmanHosts(prefix=f"{hosts.prefix}x")
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            made = list(pool.map(lambda n: hosts.create(n, [key.public]), ["par-1", "par-2"]))
            made.append(pool.submit(other.create, "par-1", [key.public]).result())
        assert len(set(made)) == 3
        mine = hosts.list()
        assert {hosts.container_name("par-1"), hosts.container_name("par-2")} <= set(mine)
        assert other.container_name("par-1") not in mine
        assert set(other.list()) == {other.container_name("par-1")}
        keys = {host_key(hosts.container_name(n)).asbytes() for n in ("par-1", "par-2")}
        assert len(keys) == 2
    finally:
        other.clear()
        hosts.delete("par-1")
        hosts.delete("par-2")


def test_stopped_host_is_listed_without_address_and_create_restarts_it(hosts):
    key = KeyPair()
    hosts.create("restart-1", [key.public])
    container = hosts.container_name("restart-1")
    before = host_key(container).asbytes()
    podman("stop", container)
    assert hosts.list()[container] == ""

    ip = hosts.create("restart-1", [key.public])  # the same host again, not a second one
    assert hosts.list()[container] == ip
    with ssh(ip, container, key) as client:
        assert run(client, "true")[0] == 0
    assert host_key(container).asbytes() == before
    hosts.delete("restart-1")


def test_containers_without_our_labels_are_never_touched(hosts):
    container = hosts.container_name("stranger")
    podman("run", "--detach", "--name", container, hosts.ensure_image())
    try:
        assert container not in hosts.list()
        with pytest.raises(PodmanHostError, match="not a pm-test"):
            hosts.delete("stranger")
        with pytest.raises(PodmanHostError, match="not a pm-test"):
            hosts.create("stranger", [])
        assert podman("container", "exists", container, check=False).returncode == 0
        labels = json.loads(podman("container", "inspect", container).stdout)[0]["Config"]["Labels"] or {}
        assert HOST_LABEL not in labels
    finally:
        podman("rm", "--force", "--time", "0", container, check=False)


def test_mailhost_image_has_the_mail_packages_installed_but_nothing_running(mail_hosts):
    key = KeyPair()
    ip = mail_hosts.create("mx-1", [key.public], hostname="mx-1.penguinmails.test")
    container = mail_hosts.container_name("mx-1")
    with ssh(ip, container, key) as client:
        code, version = run(client, "postconf -d mail_version")
        assert code == 0 and version.startswith("mail_version = 3.")
        code, out = run(
            client, "dpkg-query -W -f '${Package} ${Status}\\n' " + " ".join(images.MAIL_PACKAGES)
        )
        assert code == 0, out
        assert all(line.endswith("install ok installed") for line in out.splitlines())
        assert len(out.splitlines()) == len(images.MAIL_PACKAGES)
        assert run(client, "pgrep -x master || pgrep -x dovecot || pgrep -x opendkim")[0] == 1
        assert run(client, "test -e /usr/sbin/policy-rc.d")[0] == 1


def test_mail_daemons_bind_their_ports_with_the_default_capabilities(mail_hosts):
    """Postfix (25, 465, 587), Dovecot (993), spamd and OpenDKIM start in a host without --cap-add."""
    key = KeyPair()
    ip = mail_hosts.create("mx-2", [key.public], hostname="mx-2.penguinmails.test")
    with ssh(ip, mail_hosts.container_name("mx-2"), key) as client:
        enable_submission = (
            "sed -i 's/^#submission /submission /; s/^#submissions /submissions /' /etc/postfix/master.cf"
        )
        for command in (
            enable_submission,
            "postfix check",
            "service postfix start",
            "service dovecot start",
            "service spamd start",
            "service opendkim start",
            "service spamass-milter start",
        ):
            # Dovecot keeps the fds it was started with: detach them or the SSH channel never closes.
            code, out = run(
                client, f"{command} </dev/null >/tmp/step.log 2>&1; s=$?; cat /tmp/step.log; exit $s"
            )
            assert code == 0, f"{command}: {out}"
        code, listening = run(
            client, "for i in $(seq 50); do ss -ltn | grep -q ':783 ' && break; sleep 0.2; done; ss -ltn"
        )
        assert ":783 " in listening, listening
        assert run(client, "pgrep -x opendkim && pgrep -x spamass-milter")[0] == 0
        gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
        code, verdict = run(client, f"printf 'Subject: t\\n\\n{gtube}\\n' | spamc -c")
        assert code == 1 and float(verdict.split("/")[0]) >= 1000, verdict  # GTUBE alone scores 1000
    for port in (25, 465, 587, 993):
        with socket.create_connection((ip, port), timeout=10) as conn:
            conn.settimeout(10)
            if port in (25, 587):
                assert conn.recv(64).startswith(b"220 ")
            if port == 993:  # Dovecot's snakeoil certificate: only check that TLS is served.
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                with context.wrap_socket(conn) as tls:
                    assert tls.recv(64).startswith(b"* OK")


def test_a_bridge_made_before_the_first_container_is_the_one_podman_uses(hosts):
    """What a fresh machine's devenv does for podman's default network (the ACME CA listens on its
    gateway before any host exists), on a network of this test's own."""
    from devenv.podman_hosts import ensure_default_bridge

    image = hosts.ensure_image()
    third = 100 + secrets.randbelow(150)
    network = f"pm-bridge-{secrets.token_hex(3)}"
    subprocess.run(
        ["podman", "network", "create", "--subnet", f"10.89.{third}.0/24", "--gateway", f"10.89.{third}.1",
         network],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    bridge = subprocess.run(
        ["podman", "network", "inspect", network, "--format", "{{.NetworkInterface}}"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    listener = None
    try:
        assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0
        assert ensure_default_bridge(network) == f"10.89.{third}.1"
        assert ensure_default_bridge(network) == f"10.89.{third}.1"  # a second call changes nothing
        listener = socket.create_server((f"10.89.{third}.1", 0))  # the address is this machine's now
        port = listener.getsockname()[1]
        reached = subprocess.run(
            ["podman", "run", "--rm", "--network", network, image, "python3", "-c",
             f"import socket; socket.create_connection(('10.89.{third}.1', {port}), timeout=5); print('ok')"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert reached.stdout.strip() == "ok", reached.stderr
    finally:
        if listener is not None:
            listener.close()
        subprocess.run(["podman", "network", "rm", "-f", network], capture_output=True, timeout=60)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=60)
