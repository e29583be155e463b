"""The redis role on a real podman host: converge twice, then TLS, ACL users and persistence from outside.

One host from the base image with its own SSH key and container prefix (removed at the end). A throw-away
CA signs the server's certificate (its IP in the SAN); every client here verifies the chain against that
CA and the host name. The variables are made by :mod:`modules.ansible.redis_host`, as ``RedisHost`` makes
them, so the queue user's rules are the ones :class:`RedisUser` sends (``modules.redis.acl``).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import secrets
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modules.ansible import redis_host, runner
from modules.config.model import RedisConfig
from modules.redis import acl
from modules.redis.resources import _as_dict, acl_rules, live_matches, user_props
from tests.infra.support import Lab
from tests.support.redis_acl import FORBIDDEN, assert_refused, fill

pytestmark = pytest.mark.services

PREFIXES = RedisConfig().key_prefixes
QUEUE_USER = "penguinmails-queue"
TLS_PORT = redis_host.DEFAULT_TLS_PORT


CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
)  # fmt: skip


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str = "penguinmails test CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(ca_key, ca_cert: x509.Certificate, ip: str, fqdn: str) -> tuple[str, str]:
    """(certificate PEM, PKCS#8 private key PEM) for ``ip`` and ``fqdn``, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(fqdn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(fqdn), x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    """A Redis host converged twice (the second run must be a no-op), with what the tests need to reach it."""
    folder = tmp_path_factory.mktemp("ansible-redis")
    lab = Lab(folder, kind="base")
    try:
        host = lab.create("redis-1", "redis-1.penguinmails.test")
        ca_key, ca_cert = make_ca()
        cert_pem, key_pem = make_server_cert(ca_key, ca_cert, host["ip"], host["fqdn"])
        ca_file = folder / "ca.crt"
        ca_file.write_text(_pem(ca_cert))
        passwords = {"admin": secrets.token_urlsafe(32), "queue": secrets.token_urlsafe(32)}
        plain = redis_host.playbook_vars(
            bind_addresses=[host["ip"], "127.0.0.1"],
            tls_certificate=cert_pem,
            tls_ca_certificate=_pem(ca_cert),
        )
        secret = redis_host.secret_vars(
            admin_password=passwords["admin"],
            tls_private_key=key_pem,
            queue_user=QUEUE_USER,
            queue_password=passwords["queue"],
            key_prefixes=PREFIXES,
        )
        text = lab.inventory(group="redis", playbook="redis.yml")

        def converge(**overrides) -> runner.PlaybookRun:
            started = time.monotonic()
            extra_vars = {**plain, **overrides}
            run = runner.run_playbook(
                "redis.yml", text, stack=lab.prefix, extra_vars=extra_vars, secret_vars=secret
            )
            run.wall = time.monotonic() - started
            return run

        runs = [converge(), converge()]
        print(f"\nredis converge: first {runs[0].wall:.0f} s, second {runs[1].wall:.0f} s")
        yield {
            "lab": lab,
            "host": host,
            "ip": host["ip"],
            "ca_file": ca_file,
            "key_pem": key_pem,
            "passwords": passwords,
            "runs": runs,
            "converge": converge,
            "token": secrets.token_hex(4),
        }
    finally:
        lab.close()


def _client(
    converged, username: str | None, password: str | None, ca_file: Path | None = None
) -> redis.Redis:
    return redis.Redis(
        host=converged["ip"],
        port=TLS_PORT,
        username=username,
        password=password,
        ssl=True,
        ssl_ca_certs=str(ca_file or converged["ca_file"]),
        ssl_cert_reqs="required",
        ssl_check_hostname=True,
        socket_timeout=10,
        decode_responses=True,
    )


@pytest.fixture
def admin(converged):
    client = _client(converged, "default", converged["passwords"]["admin"])
    yield client
    client.close()


@pytest.fixture
def worker(converged):
    client = _client(converged, QUEUE_USER, converged["passwords"]["queue"])
    yield client
    client.close()


def _exec(converged, *command: str) -> subprocess.CompletedProcess:
    name = converged["lab"].podman.container_name("redis-1")
    return subprocess.run(
        ["podman", "exec", name, *command], capture_output=True, text=True, timeout=60, check=True
    )


def test_first_converge_changes_the_host_and_second_changes_nothing(converged):
    first, second = converged["runs"]
    assert first.hosts["redis-1"].changed >= 5
    assert first.hosts["redis-1"].failed == 0
    assert second.host_results()["redis-1"]["changed"] == 0
    assert second.host_results()["redis-1"]["failed"] == 0
    assert second.host_results()["redis-1"]["ok"] > 5


def test_server_settings_are_tls_only_protected_append_only_without_eviction(admin):
    config = admin.config_get("*")
    assert config["maxmemory-policy"] == "noeviction"
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"
    assert config["protected-mode"] == "yes"
    assert config["port"] == "0"
    assert config["tls-port"] == str(TLS_PORT)
    assert config["tls-auth-clients"] == "no"
    assert config["maxmemory"] == str(512 * 1024 * 1024)
    assert config["aclfile"] == "/etc/redis/users.acl"


def test_plain_tcp_is_closed_and_the_tls_port_speaks_only_tls(converged):
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((converged["ip"], 6379), timeout=5).close()
    plain = redis.Redis(host=converged["ip"], port=TLS_PORT, socket_timeout=5)
    with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        plain.ping()


def test_clients_verify_the_server_against_the_ca(converged, tmp_path):
    # The same client with another CA must fail: the successful connections above really verified.
    _, other_ca = make_ca("another CA")
    other = tmp_path / "other-ca.crt"
    other.write_text(_pem(other_ca))
    client = _client(converged, QUEUE_USER, converged["passwords"]["queue"], ca_file=other)
    with pytest.raises(redis.exceptions.ConnectionError, match=r"(?i)certificate verify failed"):
        client.ping()
    context = ssl.create_default_context(cafile=str(converged["ca_file"]))
    with socket.create_connection((converged["ip"], TLS_PORT), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="redis-1.penguinmails.test") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with socket.create_connection((converged["ip"], TLS_PORT), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname="not-this-host.penguinmails.test")


# One harmless call per key command the queue may run (``{k}`` is a key under the prefix under test); the
# tests run those the allow-list (modules.redis.acl.QUEUE_COMMANDS) holds, in this order.
SAMPLES = [
    ("SET", "{k}:s", "v", "PX", "60000"),
    ("GET", "{k}:s"),
    ("PEXPIRE", "{k}:s", "60000"),
    ("EXISTS", "{k}:s"),
    ("TTL", "{k}:s"),
    ("HSET", "{k}:h", "state", "waiting"),
    ("HGET", "{k}:h", "state"),
    ("HMGET", "{k}:h", "state", "attempts"),
    ("HGETALL", "{k}:h"),
    ("HDEL", "{k}:h", "state"),
    ("LPUSH", "{k}:l", "wake"),
    ("RPUSH", "{k}:l", "wake"),
    ("LTRIM", "{k}:l", "0", "9"),
    ("LLEN", "{k}:l"),
    ("BLPOP", "{k}:l", "0.01"),
    ("ZADD", "{k}:z", "1", "a", "2", "b"),
    ("ZSCORE", "{k}:z", "a"),
    ("ZMSCORE", "{k}:z", "a", "b"),
    ("ZCARD", "{k}:z"),
    ("ZRANGEBYSCORE", "{k}:z", "-inf", "+inf"),
    ("ZPOPMIN", "{k}:z"),
    ("ZREM", "{k}:z", "b"),
    ("EVAL", "return redis.call('GET', KEYS[1])", "1", "{k}:s"),
    ("DEL", "{k}:s", "{k}:h", "{k}:l", "{k}:z"),
]


def _allowed_samples() -> list[tuple[str, ...]]:
    return [sample for sample in SAMPLES if sample[0].lower() in acl.QUEUE_COMMANDS]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_queue_user_runs_queue_commands_under_each_prefix(prefix, worker, converged):
    key = f"{prefix}vps-{converged['token']}"
    samples = _allowed_samples()
    assert {"SET", "GET", "DEL"} <= {sample[0] for sample in samples}
    for sample in samples:
        worker.execute_command(*fill(sample, key))  # a refusal raises NoPermissionError
    assert worker.set(f"{key}:s", "v") is True
    assert worker.get(f"{key}:s") == "v"
    assert worker.delete(f"{key}:s") == 1


def test_queue_user_is_refused_outside_its_prefixes(worker, converged):
    outside = f"outside:vps-{converged['token']}"
    for sample in _allowed_samples():
        with pytest.raises(redis.exceptions.NoPermissionError):
            worker.execute_command(*fill(sample, outside))
    # A script may not reach a key outside the prefixes either, declared or not.
    with pytest.raises(redis.exceptions.ResponseError, match="can't access"):
        worker.eval(f"return redis.call('SET', '{outside}', 'v')", 0)


@pytest.mark.parametrize("command", FORBIDDEN, ids=lambda c: " ".join(c[:2]))
def test_forbidden_command_is_refused(command, worker, admin, converged):
    assert_refused(worker, admin, QUEUE_USER, fill(command, f"{PREFIXES[0]}vps-{converged['token']}"))


def test_file_user_has_exactly_the_rights_redis_user_would_set(admin, converged):
    """The role's user and one made by RedisUser's own SETUSER rules are the same to Redis."""
    props = user_props(QUEUE_USER, converged["passwords"]["queue"], PREFIXES)
    twin = f"pm-twin-{converged['token']}"
    admin.execute_command("ACL", "SETUSER", twin, *acl_rules(props))  # in memory only: no ACL SAVE
    try:
        live = _as_dict(admin.execute_command("ACL", "GETUSER", QUEUE_USER))
        reference = _as_dict(admin.execute_command("ACL", "GETUSER", twin))
    finally:
        admin.execute_command("ACL", "DELUSER", twin)
    matches = live_matches(live, {**props, "acl_commands": reference["commands"]})
    assert matches == dict.fromkeys(matches, True)
    assert live["commands"] == reference["commands"]
    assert live["passwords"] == reference["passwords"] == [acl.password_sha256(props["password"])]
    assert "+flushall" not in live["commands"] and "+@all" not in live["commands"]


@pytest.mark.parametrize("user", ["default", QUEUE_USER])
def test_wrong_password_is_refused(user, converged):
    with pytest.raises(redis.exceptions.AuthenticationError):
        _client(converged, user, "wrong-password-" + secrets.token_hex(4)).ping()


def test_a_client_without_password_may_run_nothing(converged):
    with pytest.raises(redis.exceptions.AuthenticationError):
        _client(converged, None, None).get(f"{PREFIXES[0]}x")


def test_files_on_the_host_keep_secrets_private_and_passwords_hashed(converged):
    for path in ("/etc/redis/tls/redis.key", "/etc/redis/users.acl"):
        assert _exec(converged, "stat", "-c", "%a %U", path).stdout.split() == ["600", "redis"], path
    acl = _exec(converged, "cat", "/etc/redis/users.acl").stdout
    for password in converged["passwords"].values():
        assert password not in acl
        assert f"#{hashlib.sha256(password.encode()).hexdigest()}" in acl


def test_runner_output_and_events_hold_no_secret(converged):
    run = converged["runs"][-1]
    folder = runner.state_dir() / "artifacts" / converged["lab"].prefix
    texts = [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file()]
    stdout = Path(run.artifact_dir, "stdout").read_text()
    assert "Ensure the server's private key is installed for Redis alone." in stdout
    assert [p for p in folder.rglob("*.json") if "job_events" in p.parts]
    key_lines = [line for line in converged["key_pem"].splitlines() if "-----" not in line]
    assert key_lines
    for text in texts:
        for password in converged["passwords"].values():
            assert password not in text
            assert hashlib.sha256(password.encode()).hexdigest() not in text
        assert not any(line in text for line in key_lines)


def test_a_changed_setting_restarts_redis_and_keeps_the_data(worker, converged):
    key = f"{PREFIXES[0]}restart-{converged['token']}"
    assert worker.set(key, "before") is True

    def server() -> tuple[str, str]:
        with _client(converged, "default", converged["passwords"]["admin"]) as admin:
            return admin.info("server")["run_id"], admin.config_get("maxmemory")["maxmemory"]

    run_id, _ = server()
    changed = converged["converge"](redis_maxmemory="256mb")
    assert changed.hosts["redis-1"].changed >= 2  # redis.conf, then the handlers' restart
    new_run_id, maxmemory = server()
    assert new_run_id != run_id and maxmemory == str(256 * 1024 * 1024)
    with _client(converged, QUEUE_USER, converged["passwords"]["queue"]) as again:
        assert again.get(key) == "before"
    back = converged["converge"]()
    assert back.hosts["redis-1"].changed >= 2
    assert server()[1] == str(512 * 1024 * 1024)


def test_a_killed_server_keeps_written_keys_through_the_append_only_file(worker, converged):
    key = f"{PREFIXES[0]}aof-{converged['token']}"
    assert worker.set(key, "kept") is True
    time.sleep(2)  # appendfsync everysec
    # SIGKILL: no shutdown save, so only the AOF can bring the key back.
    _exec(converged, "sh", "-c", "kill -9 $(cat /run/redis/redis-server.pid)")
    _exec(converged, "service", "redis-server", "start")
    deadline = time.monotonic() + 30
    while True:
        try:
            with _client(converged, QUEUE_USER, converged["passwords"]["queue"]) as again:
                assert again.get(key) == "kept"
                again.delete(key)
            break
        except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
