"""Outages of what the call path's caches depend on: after a failure, leave it alone for a while.

Why: a frozen Redis answers nothing until the client's socket timeout (1 s by default), and one cached
call asks its storage up to four times (exact get, semantic lookup, exact put, semantic store). Asking
a frozen server on every operation would add seconds to every call for as long as the freeze lasts.
So, like the rate limiter's `storage_retry_interval`, a failure opens an outage: for `retry_interval`
seconds the call path skips that storage (a lookup that could reach no cache is counted as `bypass`,
a store is dropped), then one operation probes it; a success ends the outage, a failed probe doubles the
wait up to `max_retry_interval`. A frozen storage thus costs one timeout per interval, paid by the one
call that probes, not four timeouts on every call. `retry_interval=0` probes at every operation.

One warning per outage (the first failure), one info line at the recovery with the operations skipped,
debug lines in between. The logger is the caller's, so the messages read as the response cache's.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_RETRY_INTERVAL", "DEFAULT_RETRY_INTERVAL", "Outage", "OutageStats", "check_intervals"]

DEFAULT_RETRY_INTERVAL = 2.0
"""Seconds a failed storage is left alone before one operation probes it."""
DEFAULT_MAX_RETRY_INTERVAL = 30.0
"""The longest wait between probes after repeated failed probes (the wait doubles each time)."""


@dataclass(frozen=True)
class OutageStats:
    """Counts since the cache was made, summed over its storages."""

    outages: int = 0
    """Outages begun (each logged one warning)."""
    failures: int = 0
    """Operations that were attempted and failed."""
    skipped: int = 0
    """Operations not attempted because their storage was in an outage."""
    probes: int = 0
    """Operations attempted during an outage to learn whether it had ended."""


def check_intervals(retry_interval: object, max_retry_interval: object) -> tuple[float, float]:
    """Both intervals as floats; ValueError saying which one is wrong and what to give instead."""
    values = []
    for name, value in (("retry_interval", retry_interval), ("max_retry_interval", max_retry_interval)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}={value!r}: give a finite number of seconds >= 0 "
                             "(0 asks a failed cache storage again at every operation)")
        values.append(float(value))
    if values[1] < values[0]:
        raise ValueError(f"max_retry_interval={max_retry_interval!r} is below retry_interval={retry_interval!r}: "
                         "the wait between probes only grows; give a max_retry_interval >= retry_interval")
    return values[0], values[1]


class Outage:
    """The outage state of one storage (or of one semantic cache's embedder and index); thread-safe.

    `allow()` before an operation, then `ok()` or `failed()` after it. While healthy, `allow` and `ok`
    read one attribute and take no lock: the call path pays nothing for this when nothing fails.
    """

    def __init__(
        self,
        name: str,
        log: logging.Logger,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        max_retry_interval: float = DEFAULT_MAX_RETRY_INTERVAL,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self.retry_interval, self.max_retry_interval = check_intervals(retry_interval, max_retry_interval)
        self._log = log
        self._clock = clock if clock is not None else time.monotonic
        self._lock = threading.Lock()
        self._down = False
        self._retry_at = 0.0
        self._wait = self.retry_interval
        self._probing = False
        self._skipped_before = 0
        self.outages = self.failures = self.skipped = self.probes = 0

    @property
    def down(self) -> bool:
        """Whether an outage is going on (the next operations are skipped until a probe is due)."""
        return self._down

    def allow(self) -> bool:
        """Whether to attempt the operation: always while healthy; in an outage, once per wait (a probe).

        The probe's caller pushes the next probe one wait further, so concurrent callers skip while it
        runs, and a probe stuck past the wait never lets more than one more start per wait.
        """
        if not self._down:
            return True
        with self._lock:
            if not self._down:
                return True
            now = self._clock()
            if now < self._retry_at:
                self.skipped += 1
                return False
            self._retry_at = now + self._wait
            self._probing = True
            self.probes += 1
            return True

    def ok(self) -> None:
        """The operation succeeded: an outage, if any, is over."""
        if not self._down:
            return
        with self._lock:
            if not self._down:
                return
            self._down = self._probing = False
            self._wait = self.retry_interval
            skipped = self.skipped - self._skipped_before
        self._log.info("otel-llmcost: the response cache answers again (%s); %d operations were skipped during "
                       "the outage", self.name, skipped)

    def failed(self, what: str, error: BaseException) -> None:
        """The operation failed: begin an outage, or, after a failed probe, wait longer before the next."""
        with self._lock:
            self.failures += 1
            first = not self._down
            if first:
                self._down = True
                self._wait = self.retry_interval
                self._skipped_before = self.skipped
                self.outages += 1
            elif self._probing:  # a probe failed (not an operation begun before the outage): back off
                self._wait = min(self._wait * 2, self.max_retry_interval)
            self._probing = False
            self._retry_at = self._clock() + self._wait
            wait = self._wait
        if first:
            self._log.warning(
                "otel-llmcost: the response cache failed (%s, %s: %s: %s); calls go to the provider uncached, "
                "the storage is left alone for %g s, then asked again (less often while it keeps failing)",
                self.name, what, type(error).__name__, error, wait)
        else:
            self._log.debug("otel-llmcost: the response cache failed again (%s, %s); next try in %g s",
                            self.name, what, wait, exc_info=error)

    def stats(self) -> OutageStats:
        """This state's counts."""
        with self._lock:
            return OutageStats(self.outages, self.failures, self.skipped, self.probes)
