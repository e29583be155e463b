"""The penguinmails exporter's wheelhouse: what the monitoring VPS installs, built on the controller.

The exporter needs pydantic, psycopg and friends in the versions the toolkit is tested with; Debian 12
ships older ones (pydantic 1). So the controller collects wheels of exactly its own installed versions
(``pip download --no-deps``, from the package index it was installed from, or pip's cache) plus the
toolkit's ``modules`` package as one zip (run from ``PYTHONPATH``: pure Python, zipimport), and the
penguinmails_exporter role installs the wheels with ``pip --no-index``: the host needs no package index
and gets nothing the controller did not test. Built once per set of versions and project sources
(``.cache/wheelhouse/<digest>``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from modules.errors import ToolkitError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CACHE = PROJECT_ROOT / ".cache" / "wheelhouse"
# What `import modules.monitoring.exporter` loads, and the queue source's Redis client.
DISTRIBUTIONS = (
    "annotated-types",
    "anyio",
    "bcrypt",
    "cffi",
    "cryptography",
    "dnspython",
    "h11",
    "h2",
    "hiredis",
    "hpack",
    "httpcore2",
    "httpx2",
    "hyperframe",
    "idna",
    "orjson",
    "prometheus-client",
    "psycopg",
    "psycopg-binary",
    "pycparser",
    "pydantic",
    "pydantic-core",
    "redis",
    "sniffio",
    "truststore",
    "typing-extensions",
    "typing-inspection",
)
SOURCES = ("modules",)
SOURCE_ZIP = "penguinmails-modules.zip"


class WheelhouseError(ToolkitError):
    exit_code = 2


def pins() -> list[str]:
    """``name==version`` of every distribution the exporter needs, as installed here."""
    found = []
    for name in DISTRIBUTIONS:
        try:
            found.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional helper of a library (for example sniffio on a newer anyio)
    return found


def digest(root: Path = PROJECT_ROOT) -> str:
    """Changes with the pins and with the project's Python sources (the exporter's code)."""
    h = hashlib.sha256("\n".join(pins()).encode())
    for source in SOURCES:
        path = root / source
        files = (
            [path]
            if path.is_file()
            else sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        )
        for file in files:
            h.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _pip(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise WheelhouseError(f"wheelhouse: pip {args[0]} failed: {' / '.join(tail)}")


def _source_zip(root: Path, dest: Path) -> None:
    """The ``modules`` package's Python files, with fixed timestamps (the same sources, the same bytes)."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted((root / "modules").rglob("*.py")):
            if "__pycache__" in file.parts:
                continue
            info = zipfile.ZipInfo(str(file.relative_to(root)), date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, file.read_bytes())


def ensure(root: Path = PROJECT_ROOT, cache: Path = CACHE) -> Path:
    """The wheelhouse folder for the current pins and sources, built if missing (atomically)."""
    target = cache / digest(root)
    if (target / "MANIFEST").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        _pip("download", "--no-deps", "--only-binary=:all:", "--dest", str(work), *pins(), cwd=root)
        _source_zip(root, work / SOURCE_ZIP)
        wheels = sorted(p.name for p in work.glob("*.whl"))
        (work / "MANIFEST").write_text("".join(f"{name}\n" for name in wheels))
        try:
            work.rename(target)
        except OSError:  # built meanwhile by another run
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def relative(path: Path, root: Path = PROJECT_ROOT) -> str:
    """The path the role is given: relative to the project, so moving the checkout changes nothing."""
    return str(path.relative_to(root))
