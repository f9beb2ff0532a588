"""The IMT load-progression rule of the protocol, as pure functions shared by generator and checks.

Protocol: the starting load is 30 % of MIP; the load is raised by 10 % when perceived exertion
(Borg CR10) decreased on two consecutive training days. Operationally, over the diary entries of
one participant in date order (a missed calendar day does not break a streak):
- a "decrease" is a session whose Borg rating is lower than the previous session's, both sessions
  at the same load;
- after the second decrease in a row, the next session's load is round_half_up(load x 1.1) and the
  count starts again at the new load;
- otherwise the next session keeps the load of the previous one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

START_FRACTION = 0.30
RAISE_FACTOR = 1.10
DECREASES_TO_RAISE = 2


def round_half_up(value: float) -> int:
    """Round as REDCap's round() and a clinician do (2.5 -> 3), unlike Python's banker's round."""
    return math.floor(value + 0.5)


def starting_load(mip: float) -> int:
    """Starting load in cmH2O: 30 % of MIP, rounded half up."""
    return round_half_up(START_FRACTION * mip)


def raised_load(load: int) -> int:
    """The load after one +10 % step (always at least 1 cmH2O more)."""
    return max(load + 1, round_half_up(load * RAISE_FACTOR))


class LoadProgression:
    """The rule as a state machine: feed it each session done, ask for the next session's load."""

    def __init__(self, start_load: int):
        self.start_load = start_load
        self._last_load: int | None = None
        self._last_borg = 0.0
        self._streak = 0
        self._raise_due = False

    def next_load(self) -> int:
        if self._last_load is None:
            return self.start_load
        return raised_load(self._last_load) if self._raise_due else self._last_load

    def record(self, load: int, borg: float) -> None:
        """Register a session actually done (whatever load the participant really used)."""
        if self._last_load == load and borg < self._last_borg:
            self._streak += 1
        else:
            self._streak = 0
        self._raise_due = self._streak >= DECREASES_TO_RAISE
        if self._raise_due:
            self._streak = 0
        self._last_load, self._last_borg = load, borg


def expected_loads(start_load: int, loads: Sequence[int], borgs: Sequence[float]) -> list[int]:
    """The load the rule prescribes for each session, given the loads and Borg actually recorded.

    Each expectation uses only the sessions before it, so one deviation does not make every later
    session look wrong: the rule continues from the load actually used.
    """
    if len(loads) != len(borgs):
        raise ValueError(f"{len(loads)} loads but {len(borgs)} Borg ratings")
    rule = LoadProgression(start_load)
    expected: list[int] = []
    for load, borg in zip(loads, borgs, strict=True):
        expected.append(rule.next_load())
        rule.record(load, borg)
    return expected


def rule_violations(start_load: int, loads: Sequence[int], borgs: Sequence[float]) -> list[int]:
    """Zero-based session indexes whose load differs from what the rule prescribes."""
    wanted = expected_loads(start_load, loads, borgs)
    return [i for i, (got, want) in enumerate(zip(loads, wanted, strict=True)) if got != want]
