"""The engine side of the policy pack (``policies/__main__.py`` calls :func:`serve`).

Each rule of :mod:`modules.policy.rules` becomes a stack validation policy. Two adaptations of pulumi_policy
(1.21.0): ``ConfigureStack`` is recorded, because it carries the stack config and which keys are Pulumi
secrets (the SDK drops both); and secret values are masked before the SDK would unwrap them, so a rule can
tell a secret password from a plaintext one and never sees a secret's value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modules.audit.secrets_scan import SECRET_SIG, SECRET_SIG_VALUE
from modules.policy import rules

PACK_NAME = "penguinmails"
STACK: dict[str, rules.StackView] = {"view": rules.StackView()}


def masked(value: Any) -> Any:
    """Secret envelopes keep their marker and lose their value; everything else stays as the engine sent it."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_SIG_VALUE:
            return {SECRET_SIG: SECRET_SIG_VALUE}
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def plain(value: Any) -> Any:
    """The SDK wraps nested values in unknown-checking proxies (in place): back to plain dicts and lists."""
    if isinstance(value, Mapping | Sequence) and not isinstance(value, str | bytes):
        try:
            value = value["__target"]
        except (KeyError, IndexError, TypeError):
            pass
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(v) for v in value]
    return value


def _adapt_sdk() -> None:
    from pulumi_policy import policy as sdk

    configure_stack = sdk._PolicyAnalyzerServicer.ConfigureStack

    def record_stack(self, request, context):
        STACK["view"] = rules.parse_config(dict(request.config), request.config_secret_keys)
        return configure_stack(self, request, context)

    sdk._PolicyAnalyzerServicer.ConfigureStack = record_stack
    sdk.deserialize_properties = lambda props, proxy_secrets=False: masked(props)


def validator(name: str):
    """The policy's validate(args, report_violation): the rule over every resource of the stack."""
    _, rule = rules.RULES[name]

    def validate(args, report_violation) -> None:
        resources = [rules.Resource(r.resource_type, r.urn, plain(r.props)) for r in args.resources]
        options = args.get_config() or {}
        if name == "dkim-key-age" and options.get("max_days") is not None:
            found = rules.dkim_key_age(resources, STACK["view"], max_days=float(options["max_days"]))
        else:
            found = rule(resources, STACK["view"])
        for violation in found:
            report_violation(violation.message, violation.urn or None)

    return validate


def serve() -> None:
    """Build the pack and serve it to the engine (blocks until the engine stops it)."""
    from pulumi_policy import EnforcementLevel, PolicyConfigSchema, PolicyPack, StackValidationPolicy

    _adapt_sdk()
    levels = {rules.MANDATORY: EnforcementLevel.MANDATORY, rules.ADVISORY: EnforcementLevel.ADVISORY}
    PolicyPack(
        name=PACK_NAME,
        enforcement_level=EnforcementLevel.MANDATORY,
        policies=[
            StackValidationPolicy(
                name=name,
                description=rules.DESCRIPTIONS[name],
                validate=validator(name),
                enforcement_level=levels[level],
                # The engine checks --policy-pack-config against it before the preview starts.
                config_schema=PolicyConfigSchema({"max_days": {"type": "number", "minimum": 0}})
                if name == "dkim-key-age"
                else None,
            )
            for name, (level, _) in rules.RULES.items()
        ],
    )
