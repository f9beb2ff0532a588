"""Fault injection for the REDCap emulator: seeded, so a failing run can be replayed exactly.

Each request draws once from the profile's RNG and gets at most one fault, chosen by cumulative
probability in a fixed order. The HTTP layer acts on the decision: errors and resets replace the
answer; `slow` and `timeout` delay it; `truncated` and `malformed` damage the real answer's body.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from enum import Enum

from imt_etl.errors import ConfigError


class Fault(Enum):
    ERROR_500 = "500"
    ERROR_503 = "503"
    ERROR_429 = "429"
    TIMEOUT = "timeout"  # answer only after timeout_seconds (longer than a client waits)
    RESET = "reset"  # close the connection without answering
    TRUNCATED = "truncated"  # announce the full length, send half, close
    MALFORMED = "malformed"  # 200 with a body that does not parse
    SLOW = "slow"  # answer correctly after slow_seconds


# Keys accepted by FaultProfile.from_string -> dataclass attribute.
_KEYS = {
    "500": "error_500", "error_500": "error_500",
    "503": "error_503", "error_503": "error_503",
    "429": "error_429", "error_429": "error_429",
    "timeout": "timeout", "reset": "reset", "truncated": "truncated",
    "malformed": "malformed", "slow": "slow",
    "retry_after": "retry_after", "timeout_seconds": "timeout_seconds",
    "slow_seconds": "slow_seconds", "seed": "seed",
}
_ORDER = (
    ("error_500", Fault.ERROR_500), ("error_503", Fault.ERROR_503),
    ("error_429", Fault.ERROR_429), ("timeout", Fault.TIMEOUT), ("reset", Fault.RESET),
    ("truncated", Fault.TRUNCATED), ("malformed", Fault.MALFORMED), ("slow", Fault.SLOW),
)


@dataclass
class FaultProfile:
    """Per-request probabilities of each fault (their sum must not exceed 1)."""

    error_500: float = 0.0
    error_503: float = 0.0
    error_429: float = 0.0
    retry_after: int = 1  # seconds, sent with 429 and 503
    timeout: float = 0.0
    timeout_seconds: float = 30.0
    reset: float = 0.0
    truncated: float = 0.0
    malformed: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 2.0
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        total = 0.0
        for name, _ in _ORDER:
            p = float(getattr(self, name))
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"fault profile: {name}={p} is not a probability in [0, 1]")
            total += p
        if total > 1.0 + 1e-9:
            raise ConfigError(f"fault profile: probabilities add up to {total:.3f} > 1")
        if self.retry_after < 0 or self.timeout_seconds < 0 or self.slow_seconds < 0:
            raise ConfigError("fault profile: retry_after and the delays must be >= 0")
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return any(getattr(self, name) > 0 for name, _ in _ORDER)

    def decide(self) -> Fault | None:
        """The fault for the next request, or None. Thread-safe; one draw per call."""
        with self._lock:
            draw = self._rng.random()
        edge = 0.0
        for name, fault in _ORDER:
            edge += getattr(self, name)
            if draw < edge:
                return fault
        return None

    def reseed(self, seed: int | None = None) -> None:
        """Restart the decision sequence (same seed: the same faults again)."""
        with self._lock:
            if seed is not None:
                self.seed = seed
            self._rng = random.Random(self.seed)

    @classmethod
    def from_string(cls, text: str) -> FaultProfile:
        """Parse "500=0.1,429=0.05,reset=0.05,seed=7" (blank text: no faults)."""
        values: dict[str, float | int] = {}
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, raw = item.partition("=")
            attr = _KEYS.get(key.strip().lower())
            if not sep or attr is None:
                raise ConfigError(f"fault profile: {item!r} is not KEY=VALUE with KEY one of "
                                  f"{', '.join(sorted(set(_KEYS)))}")
            try:
                number = float(raw.strip())
            except ValueError as exc:
                raise ConfigError(f"fault profile: {key.strip()}={raw.strip()!r} is not a "
                                  "number") from exc
            values[attr] = int(number) if attr in ("seed", "retry_after") else number
        return cls(**values)  # type: ignore[arg-type]
