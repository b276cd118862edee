"""The clock, pure: the system clock tells the time, a manual clock only moves when told."""

from __future__ import annotations

import time

import pytest

from bot.domain.clock import Clock, ManualClock, SystemClock


def test_the_system_clock_is_the_wall_clock() -> None:
    before = time.time()
    now = SystemClock().now()
    assert before <= now <= time.time()


def test_a_manual_clock_stands_still_until_moved() -> None:
    clock = ManualClock(1_700_000_000)
    assert clock.now() == clock.now() == 1_700_000_000.0

    assert clock.advance(90.5) == 1_700_000_090.5
    assert clock.now() == 1_700_000_090.5
    clock.advance(0)
    assert clock.now() == 1_700_000_090.5


def test_a_manual_clock_is_set_either_way_but_advances_only_forward() -> None:
    clock = ManualClock(100)
    clock.set(50)
    assert clock.now() == 50.0
    clock.set(1e9)
    assert clock.now() == 1e9
    with pytest.raises(ValueError, match="-1"):
        clock.advance(-1)
    assert clock.now() == 1e9


def test_both_are_clocks() -> None:
    clocks: list[Clock] = [SystemClock(), ManualClock(0)]
    assert all(isinstance(c.now(), float) for c in clocks)
