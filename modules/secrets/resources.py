"""Generated credentials as a dynamic resource (no pulumi-random plugin can be downloaded here).

The value is drawn once with :mod:`secrets`, stored only as a Pulumi secret (``additional_secret_outputs``)
and kept across updates. Changing the length, the alphabet or any keeper replaces the resource, which is
the one way to rotate it on purpose.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

import pulumi
import pulumi.dynamic as dynamic

ALPHABETS = {
    "alnum": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
    # URL- and shell-safe punctuation only: the value ends up in connection strings and config files.
    "password": string.ascii_letters + string.digits + "-_.~",
}
MIN_LENGTH, MAX_LENGTH = 12, 512
REPLACE_KEYS = ("length", "alphabet", "keepers")


def generate(length: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


class GeneratedSecretProvider(dynamic.ResourceProvider):
    """Checks the request, draws the value on create, replaces on any input change."""

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = []
        length = news.get("length")
        if not isinstance(length, int | float) or int(length) != length:
            failures.append(dynamic.CheckFailure("length", "must be a whole number"))
        elif not MIN_LENGTH <= int(length) <= MAX_LENGTH:
            failures.append(
                dynamic.CheckFailure("length", f"must be between {MIN_LENGTH} and {MAX_LENGTH}, got {length}")
            )
        alphabet = news.get("alphabet")
        if alphabet not in ALPHABETS:
            failures.append(
                dynamic.CheckFailure("alphabet", f"must be one of {', '.join(ALPHABETS)}, got {alphabet!r}")
            )
        keepers = news.get("keepers") or {}
        if not isinstance(keepers, dict) or not all(isinstance(v, str) for v in keepers.values()):
            failures.append(dynamic.CheckFailure("keepers", "must map names to strings"))
        inputs = dict(news)
        if not failures:
            inputs["length"] = int(length)
            inputs["keepers"] = keepers
        return dynamic.CheckResult(inputs, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        replaces = [key for key in REPLACE_KEYS if (olds.get(key) or None) != (news.get(key) or None)]
        return dynamic.DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        value = generate(int(props["length"]), ALPHABETS[props["alphabet"]])
        outs = {**props, "result": value}
        return dynamic.CreateResult(id_=secrets.token_hex(8), outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        # Nothing lives outside the state: what is stored is the truth.
        return dynamic.ReadResult(id_=id_, outs=props)


class GeneratedSecret(dynamic.Resource, module="secrets", name="GeneratedSecret"):
    """A random credential; read ``result`` (always a secret output)."""

    result: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        length: int = 32,
        alphabet: str = "password",
        keepers: dict[str, pulumi.Input[str]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        secret_opts = pulumi.ResourceOptions(additional_secret_outputs=["result"])
        super().__init__(
            GeneratedSecretProvider(),
            name,
            {"length": length, "alphabet": alphabet, "keepers": keepers or {}, "result": None},
            pulumi.ResourceOptions.merge(secret_opts, opts),
        )
