"""What is failing in this process right now. Every background loop reports here; `/__stepline/health` reads it.

A loop that fails logs the failure once, with what to do, pauses (longer each time, up to a few seconds)
and tries again; when it succeeds it logs that it recovered. Nothing accepted is lost meanwhile: the work
stays in the store until a loop can take it. Reported from the event loop and from other threads (the
SQLite writer, the loop watchdog), hence the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from stepline._errors import StoreCorruptError, StoreError

log = logging.getLogger("stepline.health")

_FIRST_PAUSE = 0.1
_MAX_PAUSE = 5.0


@dataclass
class Failure:
    component: str  # "delivery", "traces", "leases", "cron", "pruning", "store heartbeat", ...
    error: str
    fix: str
    since: float
    count: int = 1

    def to_dict(self) -> dict[str, object]:
        return {
            "component": self.component,
            "error": self.error,
            "fix": self.fix,
            "since": self.since,
            "failures": self.count,
        }


class Health:
    def __init__(self) -> None:
        self._failing: dict[str, Failure] = {}
        self._lock = threading.Lock()

    def failed(self, component: str, exc: BaseException | str, fix: str = "") -> float:
        """Record a failure of `component`; log it the first time and whenever its reason changes.

        Returns how long to pause before trying again. A StoreError's own fix wins over `fix`."""
        if isinstance(exc, StoreError):  # says what happened and what to do, apart
            error, fix = exc.message, exc.fix or fix
        else:
            error = exc if isinstance(exc, str) else _describe(exc)
        with self._lock:
            current = self._failing.get(component)
            if current is None or current.error != error:
                self._failing[component] = current = Failure(component, error, fix, time.time())
                first = True
            else:
                current.count += 1
                first = False
            count = current.count
        if first:
            # A damaged file does not heal by itself; anything else may clear without anyone's help.
            then = "it will not heal by itself" if isinstance(exc, StoreCorruptError) else "retrying by itself"
            log.error(
                "%s is failing: %s%s (%s; /__stepline/health answers 503 until it recovers)",
                component,
                error,
                f"; {fix}" if fix else "",
                then,
            )
        return float(min(_MAX_PAUSE, _FIRST_PAUSE * 2 ** (count - 1)))

    @property
    def failing(self) -> bool:
        """Whether anything fails now (cheap: for hot paths that report a recovery only then)."""
        return bool(self._failing)

    def recovered(self, component: str) -> None:
        if component not in self._failing:  # the hot path: one dict lookup
            return
        with self._lock:
            failure = self._failing.pop(component, None)
        if failure is not None:
            log.warning(
                "%s recovered after %.1f s (%d failed attempts)",
                component,
                time.time() - failure.since,
                failure.count,
            )

    def problems(self) -> list[Failure]:
        with self._lock:
            return sorted(self._failing.values(), key=lambda f: f.since)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
