"""Local container images for the "VPS" hosts: built from Debian's own packages, since nothing can be pulled.

Three layers, each tagged with a hash of its recipe so a warm run rebuilds nothing:

* ``localhost/penguinmails-debian:<key>``   debootstrap ``--variant=minbase bookworm``, ``podman import``
* ``localhost/penguinmails-host:<key>``     + sshd, python3 (and python3-apt for Ansible's apt module), tini
* ``localhost/penguinmails-mailhost:<key>`` + postfix, dovecot, spamassassin, opendkim, installed but not
  started or enabled, so mail-role convergence tests do not spend minutes in apt per host.
* ``localhost/penguinmails-monitoring:<key>`` + prometheus and prometheus-alertmanager (the monitoring
  role's packages), likewise not started: the role configures them before their first start.

The Debian mirror is the one in this machine's apt sources (the hosts get the same sources, updates and
security included); their apt lists are kept, so roles can install more packages without an apt update.
The rootfs tarball is kept in
``.cache/images/`` (git-ignored) so a wiped podman store re-imports it instead of re-running debootstrap.

``python -m devenv.images [base|mailhost|all]`` builds (or finds) the images and prints their names.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devenv.base import REPO_ROOT
from modules.errors import DevenvError

SUITE = "bookworm"
# Bump when a recipe changes in a way its text does not show (e.g. the way the rootfs is cleaned).
RECIPE_VERSION = "1"
KINDS = ("base", "mailhost", "monitoring")
BASE_PACKAGES = (
    "openssh-server",
    "python3",
    "python3-apt",
    "ca-certificates",
    "iproute2",
    "procps",
    "sudo",
    "tini",
)
MAIL_PACKAGES = (
    "postfix",
    "dovecot-imapd",
    "dovecot-lmtpd",
    "spamassassin",
    "spamd",
    "spamc",  # spamass-milter runs it; only a Recommends, which --no-install-recommends drops
    "spamass-milter",
    "opendkim",
    "opendkim-tools",
    # What the roles install next to those (the sender milter, the MTA-STS web server, the ACME client and
    # its scheduler), baked in so a dev host's first converge does not spend minutes in apt.
    "python3-milter",
    "nginx-light",
    "certbot",
    "python3-certbot-dns-rfc2136",
    "cron",
    # The monitoring agent's exporters (role monitoring_agent), scraped by the monitoring host.
    "prometheus-node-exporter",
    "prometheus-postfix-exporter",
)
MAIL_SERVICES = (
    "postfix",
    "dovecot",
    "spamd",
    "spamass-milter",
    "opendkim",
    "prometheus-node-exporter",
    "prometheus-postfix-exporter",
)
# The monitoring VPS (role monitoring): Prometheus with promtool, Alertmanager with amtool.
MONITORING_PACKAGES = ("prometheus", "prometheus-alertmanager")
MONITORING_SERVICES = ("prometheus", "prometheus-alertmanager")
IMAGE_NAMES = {
    "rootfs": "localhost/penguinmails-debian",
    "base": "localhost/penguinmails-host",
    "mailhost": "localhost/penguinmails-mailhost",
    "monitoring": "localhost/penguinmails-monitoring",
}
SOURCES_LIST = Path("/etc/apt/sources.list")
SOURCES_DIR = Path("/etc/apt/sources.list.d")
LOCK_TIMEOUT = 1800.0
DEBOOTSTRAP_TIMEOUT = 900
BUILD_TIMEOUT = 1500

# The host image's entry point: tini (PID 1) reaps daemons the mail roles start and forwards SIGTERM, so
# `podman stop` is quick. Host keys are made per container (each "VPS" has its own), keys are written once
# so a restart keeps what Ansible changed since.
HOST_INIT = """#!/bin/sh
set -eu
if [ ! -f /etc/ssh/ssh_host_ed25519_key ]; then
  ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
  ssh-keygen -q -t ecdsa -N '' -f /etc/ssh/ssh_host_ecdsa_key
fi
if [ ! -f /root/.ssh/authorized_keys ]; then
  umask 077
  mkdir -p /root/.ssh
  printf '%s\\n' "${PM_AUTHORIZED_KEYS:-}" > /root/.ssh/authorized_keys
fi
unset PM_AUTHORIZED_KEYS
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e
"""

SSHD_CONFIG = """# penguinmails dev host: root by key only, as on a freshly provisioned VPS.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
UseDNS no
"""


class ImageBuildError(DevenvError):
    """A host image could not be built (debootstrap, import or podman build failed)."""


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def _parse_one_line_sources(text: str) -> list[AptSource]:
    found = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        if words and words[0].startswith("["):  # options like [arch=amd64 signed-by=…]
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 3:
            found.append(AptSource(words[0], (words[1],), tuple(words[2:])))
    return found


def _parse_deb822_sources(text: str) -> list[AptSource]:
    found = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw:
                continue
            key, value = raw.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
            continue
        for uri in fields.get("uris", "").split():
            found.append(
                AptSource(
                    uri, tuple(fields.get("suites", "").split()), tuple(fields.get("components", "").split())
                )
            )
    return found


def apt_sources(sources_list: Path | None = None, sources_dir: Path | None = None) -> list[AptSource]:
    """Every enabled ``deb`` source of this machine (one-line ``.list`` and deb822 ``.sources`` files)."""
    sources_list = sources_list or SOURCES_LIST
    sources_dir = sources_dir or SOURCES_DIR
    found: list[AptSource] = []
    files = [sources_list] + (sorted(sources_dir.iterdir()) if sources_dir.is_dir() else [])
    for path in files:
        if not path.is_file():
            continue
        if path.suffix == ".sources":
            found += _parse_deb822_sources(path.read_text())
        elif path.suffix == ".list" or path == sources_list:
            found += _parse_one_line_sources(path.read_text())
    return found


def debian_sources(suite: str = SUITE) -> list[AptSource]:
    """The machine's sources for ``suite`` and its -updates/-security suites, main component only."""
    wanted = {suite, f"{suite}-updates", f"{suite}-security", f"{suite}/updates"}
    picked = []
    for source in apt_sources():
        suites = tuple(s for s in source.suites if s in wanted)
        if suites and "main" in source.components:
            picked.append(AptSource(source.uri, suites, ("main",)))
    return picked


def debian_mirror(suite: str = SUITE) -> str:
    """The mirror debootstrap uses: ``$PENGUINMAILS_DEBIAN_MIRROR`` or the apt source carrying ``suite``."""
    override = os.environ.get("PENGUINMAILS_DEBIAN_MIRROR")
    if override:
        return override
    for source in debian_sources(suite):
        if suite in source.suites:
            return source.uri
    raise ImageBuildError(
        f"no apt source for Debian {suite} main in {SOURCES_LIST} or {SOURCES_DIR}/ "
        "(set PENGUINMAILS_DEBIAN_MIRROR to the mirror's URL)"
    )


def rootfs_sources_list(suite: str = SUITE) -> str:
    """The container's own sources.list: the same Debian mirrors as the machine (updates and security too)."""
    sources = debian_sources(suite)
    mirror = debian_mirror(suite)
    if not any(suite in s.suites for s in sources):
        sources.insert(0, AptSource(mirror, (suite,), ("main",)))
    # A one-line entry takes one suite: deb822 entries with several suites become several lines.
    lines = [f"deb {source.uri} {name} main" for source in sources for name in source.suites]
    return "\n".join(lines) + "\n"


def cache_dir() -> Path:
    path = Path(os.environ.get("PENGUINMAILS_IMAGE_CACHE", REPO_ROOT / ".cache" / "images"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def base_containerfile(rootfs_image: str) -> str:
    packages = " ".join(BASE_PACKAGES)
    return f"""FROM {rootfs_image}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \\
 && apt-get install -y -qq --no-install-recommends {packages} >/dev/null \\
 && rm -f /etc/ssh/ssh_host_* /var/cache/apt/archives/*.deb
COPY sshd_config /etc/ssh/sshd_config.d/penguinmails.conf
COPY host-init /usr/local/sbin/penguinmails-host-init
RUN chmod 0755 /usr/local/sbin/penguinmails-host-init && chmod 0644 /etc/ssh/sshd_config.d/penguinmails.conf
EXPOSE 22
STOPSIGNAL SIGTERM
CMD ["/usr/bin/tini", "--", "/usr/local/sbin/penguinmails-host-init"]
"""


def mailhost_containerfile(base_image: str) -> str:
    packages = " ".join(MAIL_PACKAGES)
    services = " ".join(MAIL_SERVICES)
    # policy-rc.d stops postinst from starting daemons during the build; it is removed afterwards so later
    # package upgrades behave normally. The rc links are disabled: the roles decide what runs.
    return f"""FROM {base_image}
ENV DEBIAN_FRONTEND=noninteractive
RUN printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \\
 && echo 'postfix postfix/main_mailer_type select Internet Site' | debconf-set-selections \\
 && echo 'postfix postfix/mailname string localhost.localdomain' | debconf-set-selections \\
 && apt-get update -qq \\
 && apt-get install -y -qq --no-install-recommends {packages} >/dev/null \\
 && for s in {services}; do update-rc.d -f "$s" disable >/dev/null 2>&1 || true; done \\
 && rm -f /usr/sbin/policy-rc.d /var/cache/apt/archives/*.deb
"""


def monitoring_containerfile(base_image: str) -> str:
    packages = " ".join(MONITORING_PACKAGES)
    services = " ".join(MONITORING_SERVICES)
    # As for the mail host: installed, never started during the build, rc links disabled.
    return f"""FROM {base_image}
ENV DEBIAN_FRONTEND=noninteractive
RUN printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \\
 && apt-get update -qq \\
 && apt-get install -y -qq --no-install-recommends {packages} >/dev/null \\
 && for s in {services}; do update-rc.d -f "$s" disable >/dev/null 2>&1 || true; done \\
 && rm -f /usr/sbin/policy-rc.d /var/cache/apt/archives/*.deb
"""


@dataclass(frozen=True)
class ImagePlan:
    """One image: its name with the recipe hash as tag, and what builds it."""

    kind: str
    name: str
    containerfile: str = ""
    files: tuple[tuple[str, str], ...] = ()


def plan(kind: str, salt: str = "") -> list[ImagePlan]:
    """The chain of images ``kind`` needs, parents first, each named by the hash of its whole recipe.

    A ``salt`` (benchmarks: a cold build beside the images in use) gives the whole chain other
    repositories and keys, which :func:`prune_stale` never touches.
    """
    if kind not in KINDS:
        raise ImageBuildError(f"image kind {kind!r} is unknown (known: {', '.join(KINDS)})")
    repos = {k: f"{name}-{salt}" if salt else name for k, name in IMAGE_NAMES.items()}
    mirror = debian_mirror()
    sources = rootfs_sources_list()
    rootfs_key = _key(RECIPE_VERSION + salt, "rootfs", SUITE, "minbase", mirror, sources)
    rootfs = ImagePlan("rootfs", f"{repos['rootfs']}:{rootfs_key}")
    base_file = base_containerfile(rootfs.name)
    base_key = _key(RECIPE_VERSION, base_file, HOST_INIT, SSHD_CONFIG)
    base = ImagePlan(
        "base",
        f"{repos['base']}:{base_key}",
        base_file,
        (("host-init", HOST_INIT), ("sshd_config", SSHD_CONFIG)),
    )
    chain = [rootfs, base]
    if kind == "mailhost":
        mail_file = mailhost_containerfile(base.name)
        chain.append(
            ImagePlan("mailhost", f"{repos['mailhost']}:{_key(RECIPE_VERSION, mail_file)}", mail_file)
        )
    elif kind == "monitoring":
        monitoring_file = monitoring_containerfile(base.name)
        chain.append(
            ImagePlan(
                "monitoring",
                f"{repos['monitoring']}:{_key(RECIPE_VERSION, monitoring_file)}",
                monitoring_file,
            )
        )
    return chain


def image_exists(name: str) -> bool:
    return (
        subprocess.run(["podman", "image", "exists", name], capture_output=True, timeout=60).returncode == 0
    )


@contextlib.contextmanager
def _build_lock(timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """One builder at a time on this machine (the simulator and a test may both ask for the image)."""
    path = cache_dir() / ".build.lock"
    with open(path, "w") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ImageBuildError(
                        f"timed out after {timeout:.0f} s waiting for another image build"
                    ) from None
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str], what: str, timeout: int, **kwargs) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(f"{what}: timed out after {timeout} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise ImageBuildError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done


def _debootstrap_tarball(image: ImagePlan) -> Path:
    """``.cache/images/<tag>.tar``: a minbase rootfs, made once per recipe and kept for re-imports."""
    tag = image.name.rsplit(":", 1)[1]
    tarball = cache_dir() / f"rootfs-{SUITE}-{tag}.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed (run `make bootstrap`)")
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache_dir()))
    try:
        target = work / "rootfs"
        _run(
            ["debootstrap", "--variant=minbase", SUITE, str(target), debian_mirror()],
            f"debootstrap {SUITE}",
            DEBOOTSTRAP_TIMEOUT,
        )
        (target / "etc/apt/sources.list").write_text(rootfs_sources_list())
        for leftover in (target / "var/cache/apt/archives").glob("*.deb"):
            leftover.unlink()
        shutil.rmtree(target / "var/lib/apt/lists", ignore_errors=True)
        (target / "var/lib/apt/lists/partial").mkdir(parents=True)
        partial = work / "rootfs.tar"
        _run(["tar", "-C", str(target), "--numeric-owner", "-cf", str(partial), "."], "tar rootfs", 600)
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def _import_rootfs(image: ImagePlan) -> None:
    tarball = _debootstrap_tarball(image)
    _run(["podman", "import", "--change", "CMD=/bin/bash", str(tarball), image.name], "podman import", 600)


def _build(image: ImagePlan, tag_latest: bool) -> None:
    with tempfile.TemporaryDirectory(prefix=f"build-{image.kind}-", dir=cache_dir()) as context:
        root = Path(context)
        (root / "Containerfile").write_text(image.containerfile)
        for filename, content in image.files:
            (root / filename).write_text(content)
        _run(
            [
                "podman",
                "build",
                "--layers=false",
                "-f",
                str(root / "Containerfile"),
                "-t",
                image.name,
                str(root),
            ],
            f"podman build {image.name}",
            BUILD_TIMEOUT,
        )
    if tag_latest:  # for people: `podman run localhost/penguinmails-mailhost`
        latest = image.name.rsplit(":", 1)[0] + ":latest"
        _run(["podman", "tag", image.name, latest], f"podman tag {latest}", 60)


def ensure_image(kind: str = "base", log=None, salt: str = "") -> str:
    """Return the name of the ``kind`` image, building only the missing layers (under a machine-wide lock)."""
    chain = plan(kind, salt)
    if image_exists(chain[-1].name):
        return chain[-1].name
    say = log or (lambda message: None)
    with _build_lock():
        # Work folders are made only under this lock: any still here are from a build that was killed.
        for stale in [*cache_dir().glob("rootfs-*"), *cache_dir().glob("build-*")]:
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        for image in chain:
            if image_exists(image.name):
                continue
            started = time.monotonic()
            say(f"building {image.name}")
            if image.kind == "rootfs":
                _import_rootfs(image)
            else:
                _build(image, tag_latest=not salt)
            say(f"built {image.name} in {time.monotonic() - started:.1f} s")
        if not salt:
            prune_stale(chain)
    return chain[-1].name


def prune_stale(current: list[ImagePlan]) -> None:
    """Untag our images of older recipes, so disk use does not grow with every recipe change.

    Never forced: an image a container still runs on stays until that container is gone.
    """
    for image in current:
        repo, tag = image.name.rsplit(":", 1)
        listing = subprocess.run(
            ["podman", "images", "--format", "{{.Tag}}", repo], capture_output=True, text=True, timeout=60
        )
        for old in set(listing.stdout.split()) - {tag, "latest", "<none>"}:
            subprocess.run(["podman", "rmi", f"{repo}:{old}"], capture_output=True, timeout=120)


def remove_images(kind: str = "base", salt: str = "", keep_rootfs_tarball: bool = True) -> None:
    """Untag the images of ``kind``'s chain (cold-build benchmarks). Never forced: an image that a
    container still uses stays, and so does that container."""
    for image in reversed(plan(kind, salt)):
        subprocess.run(["podman", "rmi", image.name], capture_output=True, timeout=120)
        if image.kind == "rootfs" and not keep_rootfs_tarball:
            tag = image.name.rsplit(":", 1)[1]
            (cache_dir() / f"rootfs-{SUITE}-{tag}.tar").unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    kinds = list(KINDS) if argv in ([], ["all"]) else argv
    names = {}
    for kind in kinds:
        names[kind] = ensure_image(kind, log=lambda message: print(message, file=sys.stderr))
    print(json.dumps(names, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except DevenvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
