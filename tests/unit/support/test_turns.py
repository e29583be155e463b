"""The workers' turns (tests/support/turns.py) across real processes: a serial test runs alone and first."""

from __future__ import annotations

import multiprocessing
import time

from tests.support.turns import turn

CONTEXT = multiprocessing.get_context("fork")


def _hold(folder, exclusive: bool, seconds: float, entered, log) -> None:
    with turn("t", exclusive, folder):
        log.put(("in", "serial" if exclusive else "shared", time.monotonic()))
        entered.set()
        time.sleep(seconds)
        log.put(("out", "serial" if exclusive else "shared", time.monotonic()))


def _start(folder, exclusive: bool, seconds: float, log):
    entered = CONTEXT.Event()
    process = CONTEXT.Process(target=_hold, args=(folder, exclusive, seconds, entered, log))
    process.start()
    return process, entered


def _events(log, count: int) -> list[tuple[str, str, float]]:
    return sorted((log.get(timeout=30) for _ in range(count)), key=lambda event: event[2])


def test_shared_turns_overlap(tmp_path):
    log = CONTEXT.Queue()
    first, entered = _start(tmp_path, False, 1.0, log)
    assert entered.wait(10)
    second, entered = _start(tmp_path, False, 0.1, log)
    assert entered.wait(10)
    for process in (first, second):
        process.join(10)
    order = [(kind, who) for kind, who, _ in _events(log, 4)]
    assert order == [("in", "shared"), ("in", "shared"), ("out", "shared"), ("out", "shared")]


def test_a_serial_turn_waits_for_the_running_test_and_goes_before_a_later_one(tmp_path):
    log = CONTEXT.Queue()
    running, entered = _start(tmp_path, False, 1.5, log)
    assert entered.wait(10)
    serial, serial_in = _start(tmp_path, True, 1.0, log)
    time.sleep(0.3)  # the serial turn is waiting now
    later, later_in = _start(tmp_path, False, 0.1, log)
    assert not serial_in.wait(0.5) and not later_in.is_set()
    for process in (running, serial, later):
        process.join(20)
    events = _events(log, 6)
    assert [(kind, who) for kind, who, _ in events] == [
        ("in", "shared"),
        ("out", "shared"),
        ("in", "serial"),
        ("out", "serial"),
        ("in", "shared"),
        ("out", "shared"),
    ]
