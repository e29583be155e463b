"""A least-privilege Redis ACL user for the queue workers, managed as a dynamic resource.

The admin connection comes from the stack config (``redis`` section plus the secret
``redisAdminPassword``, or on staging/production the CI variable ``secretsFromEnv`` names for it); only a
dev stack lets the devenv's ``PENGUINMAILS_REDIS_*`` variables override them. Refresh compares the live
user with the state, including the password (Redis reports its SHA-256), so an out-of-band change shows.

The user may run only :data:`QUEUE_COMMANDS`, only on keys under its prefixes, and no pub/sub channel.
Earlier versions granted command categories (input ``categories``); categories carry FLUSHALL, SWAPDB,
KEYS, SCAN and CLIENT KILL along with what a queue needs, so ``categories`` is now ignored: ``check()``
drops it from the inputs, and state that still holds it is *updated* (same user, same password) to the
allow-list on the next ``up``, never replaced.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pulumi
import pulumi.dynamic as dynamic
import redis

from modules.errors import ToolkitError
from modules.providers import ProviderSettings, redact

# The allow-list and the rule shape live in modules.redis.acl: the redis role's ACL file uses the same.
from modules.redis.acl import QUEUE_COMMANDS, command_rules, user_rules

USER_KEYS = ("username", "password", "key_prefixes", "commands")
# Inputs of earlier versions: their presence in the old state is a change (the next update drops them).
LEGACY_KEYS = ("categories",)

ENV_HOST = "PENGUINMAILS_REDIS_HOST"
ENV_PORT = "PENGUINMAILS_REDIS_PORT"
ENV_PASSWORD = "PENGUINMAILS_REDIS_ADMIN_PASSWORD"  # noqa: S105 - a variable name
SECRET_KEY = "redisAdminPassword"  # noqa: S105 - a config key


class RedisError(ToolkitError):
    """Redis refused a command or could not be reached."""


def user_props(username: Any, password: Any, key_prefixes: list[str]) -> dict[str, Any]:
    """The resource's inputs: who, with which password, on which prefixes, and the allow-list."""
    return {
        "username": username,
        "password": password,
        "key_prefixes": list(key_prefixes),
        "commands": list(QUEUE_COMMANDS),
    }


def _command_rules(props: dict[str, Any]) -> list[str]:
    return command_rules(props.get("commands") or QUEUE_COMMANDS)


def acl_rules(props: dict[str, Any]) -> list[str]:
    """ACL SETUSER rules: start from nothing (``reset`` also clears selectors), then grant only ours.

    ``categories`` of earlier inputs is not read: see the module docstring.
    """
    return ["reset", *user_rules(f">{props['password']}", props["key_prefixes"], props.get("commands"))]


def _tokens(value: Any) -> list[str]:
    """GETUSER fields come as one space-separated string (Redis 7) or a list (Redis 6.2)."""
    if not value:
        return []
    return value.split() if isinstance(value, str) else [str(v) for v in value]


def live_matches(live: dict[str, Any], props: dict[str, Any]) -> dict[str, bool]:
    """Which managed aspects of the live user still match the desired ``props``."""
    digest = hashlib.sha256(props["password"].encode()).hexdigest()
    # Redis compacts the rules it reports ("+@transaction" for our five transaction commands, and
    # "+object|help" appeared with categories), so compare with what it reported right after our own
    # SETUSER when we have that, and with the rules we send otherwise.
    seen_after_apply = props.get("acl_commands")
    wanted_commands = set(seen_after_apply.split()) if seen_after_apply else set(_command_rules(props))
    return {
        "enabled": "on" in (live.get("flags") or []),
        "password": digest in (live.get("passwords") or []),
        "key_prefixes": sorted(_tokens(live.get("keys"))) == sorted(f"~{p}*" for p in props["key_prefixes"]),
        "commands": set(_tokens(live.get("commands"))) == wanted_commands,
        # We grant no channel and no extra selector; either one added out of band widens the user.
        "channels": not _tokens(live.get("channels")),
        "selectors": not live.get("selectors"),
    }


def _as_dict(live: Any) -> dict[str, Any]:
    """ACL GETUSER answers a flat name/value list over RESP2 and a map over RESP3."""
    if isinstance(live, list):
        return dict(zip(live[::2], live[1::2], strict=False))
    return dict(live or {})


class RedisUserProvider(dynamic.ResourceProvider):
    def configure(self, req: dynamic.ConfigureRequest) -> None:
        self.settings = ProviderSettings.from_request(req)

    def _admin(self) -> tuple[redis.Redis, str | None]:
        settings = getattr(self, "settings", ProviderSettings())
        section = settings.section("redis")
        host = settings.endpoint(ENV_HOST, section.get("host") or "127.0.0.1")
        port = int(settings.endpoint(ENV_PORT, section.get("port") or 6390))
        password = settings.credential(ENV_PASSWORD, SECRET_KEY)
        client = redis.Redis(
            host=host,
            port=port,
            password=password,
            ssl=bool(section.get("tls")),
            socket_timeout=10,
            decode_responses=True,
        )
        return client, password

    def _run(self, action: str, fn) -> Any:
        client, password = self._admin()
        try:
            return fn(client)
        except redis.RedisError as exc:
            where = client.connection_pool.connection_kwargs
            raise RedisError(
                f"Redis {where.get('host')}:{where.get('port')}: {action} failed: {redact(str(exc), password)}"
            ) from None
        finally:
            client.close()

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = []
        if not news.get("username") or any(c.isspace() for c in str(news.get("username"))):
            failures.append(dynamic.CheckFailure("username", "must be a non-empty name without spaces"))
        if not news.get("key_prefixes"):
            failures.append(dynamic.CheckFailure("key_prefixes", "must list at least one key prefix"))
        # Inputs of earlier programs (``categories``) become the allow-list; nothing else can be granted.
        news = {key: value for key, value in news.items() if key not in LEGACY_KEYS}
        news.setdefault("commands", list(QUEUE_COMMANDS))
        unknown = [c for c in news["commands"] or [] if c not in QUEUE_COMMANDS]
        if not news["commands"] or unknown:
            failures.append(
                dynamic.CheckFailure(
                    "commands",
                    "may only list commands of QUEUE_COMMANDS"
                    + (f" (not {', '.join(map(str, unknown))})" if unknown else ""),
                )
            )
        return dynamic.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = [key for key in USER_KEYS if olds.get(key) != news.get(key)]
        changed += [key for key in LEGACY_KEYS if key in olds]
        replaces = [key for key in changed if key == "username"]
        return dynamic.DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def _apply(self, props: dict[str, Any]) -> dict[str, Any]:
        """Set the user and return the outputs, with the command rules as Redis itself reports them."""

        def apply(client: redis.Redis) -> str:
            client.execute_command("ACL", "SETUSER", props["username"], *acl_rules(props))
            client.execute_command("ACL", "SAVE")
            return _as_dict(client.execute_command("ACL", "GETUSER", props["username"])).get("commands", "")

        commands = self._run(f"ACL SETUSER {props['username']}", apply)
        return {**props, "acl_commands": commands}

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        existing = self._run("ACL GETUSER", lambda c: c.execute_command("ACL", "GETUSER", props["username"]))
        if existing:
            raise RedisError(
                f"RedisUser[{props['username']}]: the user already exists and is not managed by this stack; "
                "delete it or choose another redis.queue_user"
            )
        return dynamic.CreateResult(id_=props["username"], outs=self._apply(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(outs=self._apply(news))

    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        live = self._run("ACL GETUSER", lambda c: c.execute_command("ACL", "GETUSER", id_))
        if not live:
            return dynamic.ReadResult(id_="", outs={})
        live = _as_dict(live)
        matches = live_matches(live, props)
        outs = dict(props)
        # A drifted aspect is recorded as unknown-to-us, so the next preview shows an update that restores it.
        if not matches["password"]:
            outs["password"] = "(changed outside Pulumi)"  # noqa: S105 - a drift marker, not a secret
        if not matches["key_prefixes"]:
            outs["key_prefixes"] = []
        if not all(matches[aspect] for aspect in ("commands", "enabled", "channels", "selectors")):
            outs["commands"] = []
        return dynamic.ReadResult(id_=id_, outs=outs, inputs=None)

    def delete(self, id_: str, _props: dict[str, Any]) -> None:
        def delete(client: redis.Redis) -> None:
            client.execute_command("ACL", "DELUSER", id_)
            client.execute_command("ACL", "SAVE")

        self._run(f"ACL DELUSER {id_}", delete)


class RedisUser(dynamic.Resource, module="redis", name="User"):
    """An ACL user limited to ``key_prefixes`` and the queue's commands (:data:`QUEUE_COMMANDS`).

    ``categories`` is accepted so older callers keep working, and ignored (with a warning): the
    allow-list is fixed, because any category also grants commands a worker must not have.
    """

    username: pulumi.Output[str]
    password: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        username: pulumi.Input[str],
        password: pulumi.Input[str],
        key_prefixes: list[str],
        categories: list[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        if categories:
            pulumi.log.warn(f"RedisUser[{name}]: categories are ignored; the user gets QUEUE_COMMANDS only")
        props = user_props(username, password, key_prefixes)
        secret_opts = pulumi.ResourceOptions(additional_secret_outputs=["password"])
        super().__init__(RedisUserProvider(), name, props, pulumi.ResourceOptions.merge(secret_opts, opts))
