"""The warmup section and the deprecated mail.warmup_stage."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from modules.config.model import StackConfig
from modules.config.warmup import deprecations, start_day


def test_an_existing_stack_with_warmup_stage_starts_plans_on_that_day_and_is_told_to_move():
    config = StackConfig.model_validate({"mail": {"warmup_stage": 5}})
    assert start_day(config) == 5
    (message,) = deprecations(config)
    assert "mail.warmup_stage is deprecated" in message and "warmup.start_day" in message


def test_a_new_stack_starts_on_day_one_without_messages():
    config = StackConfig.model_validate({})
    assert start_day(config) == 1 and deprecations(config) == []
    assert config.warmup.plan.days == 21


def test_warmup_start_day_wins_and_is_clamped_to_the_plan():
    config = StackConfig.model_validate(
        {"mail": {"warmup_stage": 5}, "warmup": {"start_day": 30, "plan": {"days": 14}}}
    )
    assert start_day(config) == 14


def test_a_bad_plan_is_refused():
    with pytest.raises(ValidationError, match="below start_daily"):
        StackConfig.model_validate({"warmup": {"plan": {"start_daily": 900, "full_daily": 100}}})
