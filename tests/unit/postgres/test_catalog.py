"""The tenant fence parser, and the security fingerprint comparison, without a server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modules.postgres import catalog

FENCE = "tenant_id = (SELECT app_private.current_tenant_id())"
# What pg_get_expr prints for the fence internal.enable_tenant_rls creates (search_path = pg_catalog).
RENDERED = "(tenant_id = ( SELECT app_private.current_tenant_id() AS current_tenant_id))"
OWNER = "( SELECT app_private.is_owner_of('app.jobs'::regclass) AS is_owner_of)"

GOOD = [
    RENDERED,
    FENCE,
    "tenant_id = app_private.current_tenant_id()",
    "app_private.current_tenant_id() = tenant_id",
    "(SELECT app_private.current_tenant_id()) = tenant_id",
    "((tenant_id)) = ((app_private.current_tenant_id()))",
    "tenant_id::uuid = app_private.current_tenant_id()::pg_catalog.uuid",
    "tenant_id OPERATOR(pg_catalog.=) app_private.current_tenant_id()",
]
BAD = [
    ("tenant_id = app_private.current_tenant_id() OR true", "OR is not allowed"),
    ("(tenant_id = app_private.current_tenant_id()) OR (1=1)", "OR is not allowed"),
    # Stricter by choice: an AND with a tautology is harmless but refused, so nothing needs judging.
    ("tenant_id = app_private.current_tenant_id() AND true", "AND is not allowed"),
    ("tenant_id = app_private.current_tenant_id() AND id IS NOT NULL", "AND is not allowed"),
    ("NOT (tenant_id <> app_private.current_tenant_id())", "NOT is not allowed"),
    ("tenant_id <> app_private.current_tenant_id()", "operator <> is not pg_catalog.="),
    ("tenant_id OPERATOR(public.=) app_private.current_tenant_id()", "operator public.= is not"),
    ("tenant_id = public.current_tenant_id()", "other side is not"),
    ("tenant_id = current_tenant_id()", "other side is not"),
    ("tenant_id = app_private.is_owner_of('app.x'::regclass)", "other side is not"),
    ("tenant_id = app_private.current_tenant_id(1)", "other side is not"),
    ("tenant_id = (SELECT app_private.current_tenant_id() FROM app.x)", "other side is not"),
    ("tenant_id = (SELECT app_private.current_tenant_id() WHERE false)", "other side is not"),
    ("tenant_id = (SELECT (SELECT app_private.current_tenant_id()))", "other side is not"),
    ("tenant_id = '00000000-0000-0000-0000-00000000000a'::uuid", "other side is not"),
    ("tenant_id = tenant_id", "other side is not"),
    ("id = app_private.current_tenant_id()", "neither side is the tenant_id column"),
    ("owner_id = app_private.current_tenant_id()", "neither side is the tenant_id column"),
    ("t.tenant_id = app_private.current_tenant_id()", "neither side is the tenant_id column"),
    ("tenant_id::text = app_private.current_tenant_id()::text", "neither side is the tenant_id column"),
    ("true", "not a plain equality"),
    ("tenant_id IS NOT DISTINCT FROM app_private.current_tenant_id()", "not a plain equality"),
    ("tenant_id = ANY (ARRAY[app_private.current_tenant_id()])", "not a plain equality"),
    ("tenant_id = app_private.current_tenant_id() FROM app.x", "not a single expression"),
    ("1; DROP TABLE app.x", "not a single expression"),
    ("tenant_id = (", "does not parse"),
    ("", "missing"),
    (None, "missing"),
]


@pytest.mark.parametrize("expression", GOOD)
def test_the_exact_fence_is_accepted(expression):
    assert catalog.fence_problem(expression) is None
    assert catalog.is_fence(expression)


@pytest.mark.parametrize(("expression", "reason"), BAD)
def test_anything_else_is_refused_with_the_reason(expression, reason):
    assert reason in (catalog.fence_problem(expression) or "accepted")


def test_the_owner_clause_is_accepted_only_on_the_queue_tables_naming_themselves():
    both = f"({RENDERED} OR {OWNER})"
    assert catalog.fence_problem(both, "app.jobs") is None
    assert catalog.fence_problem(f"{OWNER} OR {FENCE}", "app.jobs") is None
    assert "OR is not allowed" in catalog.fence_problem(both, "app.leads")
    assert "OR is not allowed" in catalog.fence_problem(both, "app.job_logs")  # names another table
    assert "OR is not allowed" in catalog.fence_problem(both)
    assert catalog.fence_problem(f"{both} OR true", "app.jobs") is not None
    assert catalog.fence_problem(f"tenant_id = tenant_id OR {OWNER}", "app.jobs") is not None
    assert catalog.fence_problem(f"{FENCE} OR app_private.is_owner_of('app.jobs'::text)", "app.jobs")


@given(st.sampled_from(GOOD), st.sampled_from(["true", "1 = 1", "tenant_id IS NULL", FENCE]))
def test_no_disjunct_or_conjunct_is_ever_accepted(fence, other):
    for expression in (f"{fence} OR {other}", f"{other} OR ({fence})", f"{fence} AND {other}"):
        assert catalog.fence_problem(expression) is not None


@given(st.text(max_size=60))
def test_arbitrary_text_never_passes_and_never_raises(text):
    problem = catalog.fence_problem(text)  # a reason or None, never an exception
    assert problem is None or isinstance(problem, str)
    if "app_private.current_tenant_id" not in text:
        assert catalog.fence_problem(text) is not None


def test_managed_role_grantees_follow_the_tier_names():
    assert catalog.managed_role_grantees("pm_dev_oltp_migrator") == {
        "pm_dev_oltp_app",
        "pm_dev_oltp_readonly",
        "pm_dev_oltp_reputation",
        "pm_dev_oltp_warmup",
    }
    assert catalog.managed_role_grantees("pm_dev_queue_migrator") == {
        "pm_dev_queue_app",
        "pm_dev_queue_readonly",
        "pm_dev_queue_worker",
    }
    assert catalog.managed_role_grantees("someone") == set()


def function(**changes):
    state = {
        "sha256": "a" * 64,
        "security_definer": True,
        "owner": "m",
        "config": ["search_path=pg_catalog, pg_temp"],
        "grants": ["m:EXECUTE"],
    }
    return {**state, **changes}


def test_security_problems_name_the_object_and_what_changed():
    expected = {
        "function app.f(integer)": function(),
        "trigger t on app.x": {"function": "app.g()", "enabled": "O"},
        "table app.gone": {"owner": "m", "grants": []},
    }
    live = {
        "function app.f(integer)": function(
            sha256="b" * 64,
            security_definer=False,
            owner="intruder",
            config=[],
            grants=["PUBLIC:EXECUTE", "m:EXECUTE"],
        ),
        "trigger t on app.x": {"function": "app.h()", "enabled": "D"},
        "function app.new()": function(),
    }
    problems = catalog.security_problems(expected, live)
    assert problems == [
        "function app.f(integer): its definition changed (sha256 aaaaaaaaaaaa… is now bbbbbbbbbbbb…)",
        "function app.f(integer): is no longer SECURITY DEFINER",
        "function app.f(integer): owner changed from m to intruder",
        "function app.f(integer): search_path pin changed from 'pg_catalog, pg_temp' to not pinned",
        "function app.f(integer): grants not from the migrations: PUBLIC:EXECUTE",
        "table app.gone: is gone (the migrations made it)",
        "trigger t on app.x: runs app.h() instead of app.g()",
        "trigger t on app.x: enabled changed from 'O' to 'D'",
        "function app.new(): is not from the migrations",
    ]
    assert catalog.security_problems(expected, expected) == []


def test_the_retention_clause_is_accepted_only_on_the_retained_tables_naming_themselves():
    run = "( SELECT app_private.in_retention_run('app.content_objects'::regclass) AS in_retention_run)"
    both = f"({RENDERED} OR {run})"
    assert catalog.fence_problem(both, "app.content_objects") is None
    assert catalog.fence_problem(f"{run} OR {FENCE}", "app.content_objects") is None
    assert "OR is not allowed" in catalog.fence_problem(both, "app.attachments")  # names another table
    assert "OR is not allowed" in catalog.fence_problem(both, "app.leads")
    assert "OR is not allowed" in catalog.fence_problem(both, "app.jobs")  # the queue admits is_owner_of only
    owner = "( SELECT app_private.is_owner_of('app.content_objects'::regclass) AS is_owner_of)"
    assert catalog.fence_problem(f"{RENDERED} OR {owner}", "app.content_objects") is not None
    assert catalog.fence_problem(f"{both} OR true", "app.content_objects") is not None
    assert catalog.fence_problem(f"tenant_id = tenant_id OR {run}", "app.content_objects") is not None
