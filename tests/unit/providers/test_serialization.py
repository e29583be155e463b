"""Every dynamic provider in ``modules`` survives the trip the engine makes it take.

The program pickles each provider (dill) into the ``__provider`` input; the provider process, started by
the engine in the program folder with a bare environment, unpickles it. A provider that captured a client
or was pickled by value (bytecode in the state) would break refresh/destroy after a code change, so this
test insists on by-reference blobs that load in a fresh process.
"""

from __future__ import annotations

import base64
import importlib
import inspect
import pkgutil
import subprocess
import sys

import pulumi.dynamic as dynamic
import pytest
from pulumi.dynamic.dynamic import serialize_provider

import modules
from modules.engine import REPO_ROOT


def provider_classes() -> list[type[dynamic.ResourceProvider]]:
    found = []
    for info in pkgutil.walk_packages(modules.__path__, "modules."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, dynamic.ResourceProvider) and cls.__module__ == info.name:
                found.append(cls)
    return found


PROVIDERS = provider_classes()


def test_providers_are_discovered():
    names = {cls.__name__ for cls in PROVIDERS}
    assert {"GeneratedSecretProvider", "RedisUserProvider"} <= names


@pytest.mark.parametrize("cls", PROVIDERS, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_provider_is_pickled_by_reference_and_loads_in_a_fresh_process(cls):
    blob = serialize_provider(cls())
    raw = base64.b64decode(blob)
    assert cls.__module__.encode() in raw, "provider must be pickled by reference to its module"
    assert len(raw) < 2048, f"provider blob is {len(raw)} bytes: it captured state it should build in methods"
    loader = (
        "import base64, sys, dill; "
        "p = dill.loads(base64.b64decode(sys.stdin.read())); "
        "print(type(p).__module__ + '.' + type(p).__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", loader],
        input=blob,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT / "stacks",
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{cls.__module__}.{cls.__name__}"
