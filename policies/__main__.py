"""The PenguinMails policy pack: each rule of :mod:`modules.policy.rules` as a stack validation policy.

The rules are pure functions shared with ``penguinmails audit``; this file only adapts the engine's view.
Two adaptations of pulumi_policy (1.21.0): ``ConfigureStack`` is recorded, because it carries the stack
config and which keys are Pulumi secrets (the SDK drops both); and secret values are masked before the SDK
unwraps them, so a rule can tell a secret password from a plaintext one and never sees a secret's value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pulumi_policy import EnforcementLevel, PolicyPack, StackValidationPolicy
from pulumi_policy import policy as sdk

from modules.audit.secrets_scan import SECRET_SIG, SECRET_SIG_VALUE
from modules.policy import rules

STACK = {"view": rules.StackView()}
_configure_stack = sdk._PolicyAnalyzerServicer.ConfigureStack


def _record_stack(self, request, context):
    STACK["view"] = rules.parse_config(dict(request.config), request.config_secret_keys)
    return _configure_stack(self, request, context)


def _masked(value):
    """Secret envelopes keep their marker and lose their value; everything else stays as the engine sent it."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_SIG_VALUE:
            return {SECRET_SIG: SECRET_SIG_VALUE}
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _plain(value):
    """The SDK wraps nested values in unknown-checking proxies (in place): back to plain dicts and lists."""
    if isinstance(value, Mapping | Sequence) and not isinstance(value, str | bytes):
        try:
            value = value["__target"]
        except (KeyError, IndexError, TypeError):
            pass
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


sdk._PolicyAnalyzerServicer.ConfigureStack = _record_stack
sdk.deserialize_properties = lambda props, proxy_secrets=False: _masked(props)


def _policy(name: str, level: str, rule) -> StackValidationPolicy:
    def validate(args, report_violation) -> None:
        resources = [rules.Resource(r.resource_type, r.urn, _plain(r.props)) for r in args.resources]
        options = args.get_config() or {}
        if name == "dkim-key-age" and options.get("max_days"):
            found = rules.dkim_key_age(resources, STACK["view"], max_days=float(options["max_days"]))
        else:
            found = rule(resources, STACK["view"])
        for violation in found:
            report_violation(violation.message, violation.urn or None)

    return StackValidationPolicy(
        name=name,
        description=rules.DESCRIPTIONS[name],
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY
        if level == rules.MANDATORY
        else EnforcementLevel.ADVISORY,
    )


PolicyPack(
    name="penguinmails",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[_policy(name, level, rule) for name, (level, rule) in rules.RULES.items()],
)
