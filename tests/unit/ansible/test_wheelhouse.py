"""The exporter's wheelhouse: pinned to the controller's versions, rebuilt when the exporter's code changes."""

from __future__ import annotations

import importlib.metadata
import zipfile
from pathlib import Path

from modules.ansible import wheelhouse


def _project(root: Path, text: str) -> Path:
    (root / "modules" / "monitoring").mkdir(parents=True)
    (root / "modules" / "__init__.py").write_text("")
    (root / "modules" / "monitoring" / "__init__.py").write_text("")
    (root / "modules" / "monitoring" / "exporter.py").write_text(text)
    return root


def test_pins_are_the_installed_versions():
    pins = dict(p.split("==") for p in wheelhouse.pins())
    assert pins["pydantic"] == importlib.metadata.version("pydantic")
    assert pins["psycopg-binary"] == importlib.metadata.version("psycopg-binary")
    assert "pulumi" not in pins and "ansible-core" not in pins  # the host runs the exporter only


def test_digest_follows_the_sources(tmp_path):
    root = _project(tmp_path / "a", "VALUE = 1\n")
    first = wheelhouse.digest(root)
    assert wheelhouse.digest(root) == first
    (root / "modules" / "monitoring" / "exporter.py").write_text("VALUE = 2\n")
    assert wheelhouse.digest(root) != first


def test_the_source_zip_is_the_same_bytes_for_the_same_sources(tmp_path):
    one, two = _project(tmp_path / "one", "X = 1\n"), _project(tmp_path / "two", "X = 1\n")
    (one / "modules" / "monitoring" / "__pycache__").mkdir()
    (one / "modules" / "monitoring" / "__pycache__" / "stale.py").write_text("junk")
    wheelhouse._source_zip(one, tmp_path / "one.zip")
    wheelhouse._source_zip(two, tmp_path / "two.zip")
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()
    names = zipfile.ZipFile(tmp_path / "one.zip").namelist()
    assert names == [
        "modules/__init__.py",
        "modules/monitoring/__init__.py",
        "modules/monitoring/exporter.py",
    ]


def test_the_path_given_to_the_role_is_relative_to_the_project():
    path = wheelhouse.PROJECT_ROOT / ".cache" / "wheelhouse" / "abc"
    assert wheelhouse.relative(path) == ".cache/wheelhouse/abc"
