"""GeneratedSecret: validated inputs, a value from the right alphabet, replaced only when asked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modules.secrets.resources import ALPHABETS, GeneratedSecretProvider

provider = GeneratedSecretProvider()


def props(**overrides):
    return {"length": 32, "alphabet": "password", "keepers": {}, **overrides}


@given(length=st.integers(min_value=12, max_value=512), alphabet=st.sampled_from(sorted(ALPHABETS)))
def test_create_draws_value_of_length_from_alphabet(length, alphabet):
    result = provider.create(props(length=length, alphabet=alphabet))
    value = result.outs["result"]
    assert len(value) == length
    assert set(value) <= set(ALPHABETS[alphabet])
    assert result.outs["length"] == length  # every input is kept in outs


def test_two_creates_differ():
    assert provider.create(props()).outs["result"] != provider.create(props()).outs["result"]


@pytest.mark.parametrize(
    ("news", "field"),
    [
        (props(length=4), "length"),
        (props(length=10_000), "length"),
        (props(length=12.5), "length"),
        (props(alphabet="emoji"), "alphabet"),
        (props(keepers={"rotation": 3}), "keepers"),
    ],
)
def test_check_names_the_bad_field(news, field):
    failures = provider.check({}, news).failures
    assert [f.property for f in failures] == [field]


def test_diff_is_empty_when_inputs_are_unchanged():
    olds = {**props(), "result": "x" * 32}
    diff = provider.diff("id", olds, props())
    assert diff.changes is False and diff.replaces == []


@pytest.mark.parametrize("key", ["length", "alphabet", "keepers"])
def test_any_input_change_replaces(key):
    changed = {"length": 40, "alphabet": "hex", "keepers": {"rotation": "2026-q4"}}[key]
    diff = provider.diff("id", {**props(), "result": "x"}, props(**{key: changed}))
    assert diff.changes is True and diff.replaces == [key]


def test_read_keeps_the_stored_value():
    outs = {**props(), "result": "stored"}
    assert provider.read("abc", outs).outs["result"] == "stored"
