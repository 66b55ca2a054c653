"""Spend the ledger could not take yet, kept in order and replayed once it answers again.

Why: a settle or record that fails (Redis down, frozen past the socket timeout, an SQLite file locked
too long) used to be logged and dropped, so an outage lost the spend of every call that ended during
it. The `Backlog` queues such writes instead, bounded, and replays them in order:

* on the call path, right after a ledger operation that succeeded (the ledger is back), at most
  `replay_inline` of them, so one call never pays for a long backlog;
* from a background thread with exponential backoff (`retry_initial` … `retry_max` seconds), so an
  idle app drains too. The thread exists only while something waits.

The call path never waits on a dead ledger longer than before: a write that finds others waiting is
queued behind them and makes one ledger call (the oldest write, to keep the order), exactly the one
call it would have made itself; when the background thread is mid-call it waits at most `inline_wait`
and leaves the replay to it.

Each write carries an operation id that the ledger applies once (see `base.py`), so a replay whose
first attempt did run (the reply was lost on a timeout) is not counted twice. A ledger without
`op_id` support still gets replays, at least once (logged when it happens).

Bounds: `size` writes wait at most (a write that does not fit is dropped), none waits longer than
`max_age` seconds (the ledger remembers ids for `op_ttl` > `max_age`, so a later replay could count
twice). Drops are counted (`dropped`, `lost_usd`) and logged as errors with the USD lost; `close()`
makes a last attempt and logs what is left.

Crashes: with `BacklogPolicy(journal=path)` every queued write is also appended to a file before
`submit` returns (synced within `journal_sync_interval`, or before `submit` returns with
``journal_sync="always"``: see "Durability" in `journal.py`), marked done once applied, and the file is
emptied when nothing waits. A backlog created on a journal that a previous process left (it crashed, or closed
during an outage) loads its writes first, in order, and replays them like its own; those older than
`max_age` are dropped and reported lost, as in memory. Without a journal (the default) a crash of
the app loses what was waiting.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..windows import Window
from .base import BudgetKey, Ledger, Reservation

if TYPE_CHECKING:
    from .journal import BacklogJournal, JournalEntry

_log = logging.getLogger(__name__)

Count = Callable[[str, int | Decimal], None]
"""`count(name, amount)`: adds to a named counter of the owner (its stats)."""


SYNC_MODES = ("interval", "always")
"""How a queued line reaches the disk: see "Durability" in `journal.py`."""
MAX_INTERVAL = 60.0
"""The longest `journal_sync_interval`: past a minute a power loss could take more than anyone would accept."""


def check_sync(mode: object, interval: object) -> None:
    """ValueError unless `mode` is a sync mode and `interval` a sensible number of seconds."""
    if mode not in SYNC_MODES:
        raise ValueError(
            f"backlog journal_sync must be one of {', '.join(SYNC_MODES)}, not {mode!r}: 'interval' (the "
            "default) survives any crash of the app, 'always' also a power loss, at a disk sync awaited by each queued call"
        )
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval <= MAX_INTERVAL:
        raise ValueError(
            f"backlog journal_sync_interval must be a number of seconds above 0 and at most {MAX_INTERVAL:g}, "
            f"not {interval!r}: it bounds what a power loss can take (0.05 is one sync per 50 ms at most)"
        )


@dataclass(frozen=True)
class BacklogPolicy:
    """How much spend may wait for the ledger, for how long, and how often it is retried."""

    size: int = 10_000
    max_age: float = 3600.0
    retry_initial: float = 0.05
    retry_max: float = 5.0
    replay_inline: int = 32
    inline_wait: float = 0.2
    journal: str | None = None
    """A file that keeps queued writes across a crash of the app (None: memory only); one per process.
    A path ending in "/" (or an existing directory) is a directory of slots that processes without a
    stable name share: each takes a free one (see `journal.py`)."""
    journal_sync: str = "interval"
    """When a journaled write reaches the disk. "interval" (the default): it is handed to the OS before
    `submit` returns, which is all a crash of the app (kill -9, OOM) needs, since the OS keeps its page
    cache, and synced by a background thread within `journal_sync_interval`; only a power loss or a
    kernel crash inside that interval loses it. "always": synced before `submit` returns (concurrent
    calls share one sync), for a journal that must also outlive the machine. See `journal.py`."""
    journal_sync_interval: float = 0.05
    """Seconds a journaled write may wait for its sync in "interval" mode (at most one sync per interval)."""

    def __post_init__(self) -> None:
        if self.journal is not None:
            if not isinstance(self.journal, (str, os.PathLike)) or not os.fspath(self.journal).strip():
                raise ValueError(
                    f"backlog journal must be a file path (or a directory ending in /; None: none), not {self.journal!r}"
                )
            object.__setattr__(self, "journal", os.fspath(self.journal))
        check_sync(self.journal_sync, self.journal_sync_interval)
        if not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"backlog size must be a whole number >= 0 (0: no backlog), not {self.size!r}")
        if not isinstance(self.replay_inline, int) or self.replay_inline < 0:
            raise ValueError(f"replay_inline must be a whole number >= 0, not {self.replay_inline!r}")
        for name in ("max_age", "retry_initial", "retry_max", "inline_wait"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"backlog {name} must be a positive, finite number of seconds, not {value!r}")
        if self.retry_max < self.retry_initial:
            raise ValueError(f"retry_max ({self.retry_max}) must be >= retry_initial ({self.retry_initial})")

    @property
    def op_ttl(self) -> float:
        """Seconds the ledger remembers an applied id: past any replay, with room for a late server."""
        return 2 * self.max_age + 60.0


@dataclass(frozen=True)
class PendingOp:
    """One ledger write, with everything needed to send it again unchanged (same id, same window)."""

    op_id: str
    key: BudgetKey
    window: Window
    amount: Decimal
    now: float
    """The ledger time of the call (Unix seconds), sent again with every attempt."""
    reservation: Reservation | None = None
    """The hold this write settles; None: a record on `key` and `window`."""
    context: Any = None
    """The owner's own data, handed back to `on_applied` (the engine's budget match and call time)."""
    queued: float = 0.0
    """`time.monotonic()` when it was queued (for `max_age`)."""

    @property
    def what(self) -> str:
        return "settling" if self.reservation is not None else "recording"

    def entry(self, queued_at: float) -> JournalEntry:
        """This write as the journal keeps it (everything but the owner's `context`)."""
        from .journal import JournalEntry

        return JournalEntry(
            self.op_id, self.key, self.window, self.amount, self.now, self.reservation, queued_at
        )

    @classmethod
    def from_entry(cls, entry: JournalEntry) -> PendingOp:
        """A write read back from a journal; `queued` keeps the time it has already waited (wall clock),
        so `max_age` counts across the restart. `context` is None: its owner was another process."""
        waited = max(0.0, time.time() - entry.queued_at)
        return cls(entry.op_id, entry.key, entry.window, entry.amount, entry.now, entry.reservation, None,
                   time.monotonic() - waited)  # fmt: skip


def takes_op_id(ledger: Ledger) -> bool:
    """Whether the ledger's writes accept `op_id` (ledgers registered by users may predate it)."""
    def takes(fn: Callable[..., Any]) -> bool:
        params = inspect.signature(fn).parameters.values()
        return any(p.name == "op_id" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)

    try:
        return takes(ledger.settle) and takes(ledger.record)
    except (TypeError, ValueError):
        return False


class Backlog:
    """Ledger writes in order, applied now or queued and replayed (see the module doc)."""

    def __init__(
        self,
        ledger: Ledger,
        on_applied: Callable[[PendingOp, Decimal], None],
        count: Count,
        policy: BacklogPolicy | None = None,
    ) -> None:
        """Raises `ConfigError` (`JournalInUseError`) when the policy's journal cannot be used: unwritable,
        or held by another process."""
        self.ledger = ledger
        self.policy = policy or BacklogPolicy()
        self._on_applied = on_applied
        self._count = count
        self._idempotent = takes_op_id(ledger)
        self._queue: deque[PendingOp] = deque()
        self._usd = Decimal(0)
        self._lock = threading.Lock()  # the queue, its sum, the drainer handle
        self._replaying = threading.Lock()  # one replayer at a time: keeps the order
        self._wake = threading.Event()
        self._drainer: threading.Thread | None = None
        self._drainer_pid = 0  # a forked child inherits the handle, not the thread
        self._closed = False
        self._outage_replayed = 0
        self._background_failing = False
        self._dropped_since_log = 0
        self._lost_since_log = Decimal(0)
        self._last_drop_log = -float("inf")
        self._warned_not_idempotent = False
        self._journal_failing: set[str] = set()  # "write", "sync": what fails now (logged once per streak)
        self.journal: BacklogJournal | None = None
        if self.policy.journal is not None:
            from .journal import BacklogJournal

            self.journal = BacklogJournal(
                self.policy.journal,
                sync=self.policy.journal_sync,
                sync_interval=self.policy.journal_sync_interval,
                on_sync=self._journal_synced,
            )
            self._restore(self.journal)

    def _restore(self, journal: BacklogJournal) -> None:
        """Queue what a previous process left in the journal, oldest first, before anything new."""
        if not journal.recovered:
            return
        kept, kept_usd, dropped, dropped_usd = 0, Decimal(0), 0, Decimal(0)
        for entry in journal.recovered:
            op = PendingOp.from_entry(entry)
            too_old = time.monotonic() - op.queued > self.policy.max_age
            if too_old or kept >= self.policy.size:
                where = f"found in the journal {journal.path}"
                if too_old:
                    reason = f"it waited over {self.policy.max_age:g} s for the ledger; {where}"
                else:
                    reason = f"the backlog is full ({self.policy.size} waiting); {where}"
                self._drop(op, reason)
                self._done(op)
                dropped, dropped_usd = dropped + 1, dropped_usd + op.amount
                continue
            with self._lock:
                self._queue.append(op)
                self._usd += op.amount
            kept, kept_usd = kept + 1, kept_usd + op.amount
        self._count("restored", kept)
        lost = f" ({dropped} more, ${dropped_usd}, too old or past the bound: lost)" if dropped else ""
        _log.warning(
            "budget engine: the backlog journal %s held %d cost(s), $%s, that a previous process queued and "
            "the ledger never confirmed; replaying them%s",
            journal.path, kept, kept_usd, lost,
        )  # fmt: skip
        if kept:
            self._start_drainer()

    # -- what waits --
    def pending(self) -> tuple[int, Decimal]:
        """(writes waiting, their USD)."""
        with self._lock:
            return len(self._queue), self._usd

    # -- the call path --
    def submit(self, op: PendingOp) -> None:
        """Apply a write now, or queue it behind those waiting; never raises, one ledger call at most."""
        if op.amount and self._queue:
            if self._enqueue(op):
                self._replay(self.policy.replay_inline, wait=self.policy.inline_wait, call_path=True)
            return
        try:
            spent = self._apply(op)
        except Exception as exc:
            self._count("errors", 1)
            if not op.amount:
                _log.error("budget engine: %s $0 on %s failed (%s)", op.what, op.key, exc)
            elif self._enqueue(op):
                _log.error(
                    "budget engine: %s $%s on %s failed (%s); queued for replay when the ledger answers",
                    op.what, op.amount, op.key, exc,
                )  # fmt: skip
            return
        self._applied(op, spent)
        self.answered()

    def answered(self) -> int:
        """The ledger just answered the call path: replay a few waiting writes; how many went through."""
        if not self._queue:
            return 0
        return self._replay(self.policy.replay_inline, wait=self.policy.inline_wait, call_path=True)[0]

    # -- internals --
    def _apply(self, op: PendingOp) -> Decimal:
        ids: dict[str, Any] = {"op_id": op.op_id, "op_ttl": self.policy.op_ttl} if self._idempotent else {}
        if op.reservation is not None:
            return self.ledger.settle(op.reservation, op.amount, now=op.now, **ids)
        return self.ledger.record(op.key, op.window, op.amount, now=op.now, **ids)

    def _applied(self, op: PendingOp, spent: Decimal) -> None:
        try:
            self._on_applied(op, spent)
        except Exception:
            self._count("errors", 1)
            _log.exception("budget engine: checking alerts after %s on %s failed", op.what, op.key)

    def _enqueue(self, op: PendingOp) -> bool:
        """Queue a write (False: it did not fit and was dropped); journal it; start the drainer if none runs.

        The journal line is written under the queue's lock, so the file keeps the queue's order (one
        `write`, microseconds); with `journal_sync="always"` the sync is waited for after the lock is
        released, so submitters queueing at the same time share one fdatasync (group commit) instead of
        taking turns for one each.
        """
        op = PendingOp(op.op_id, op.key, op.window, op.amount, op.now, op.reservation, op.context, time.monotonic())
        journal_error: OSError | None = None
        ticket: int | None = None
        with self._lock:
            if self._closed or len(self._queue) >= self.policy.size:
                fits = False
            else:
                fits = True
                if self.journal is not None:
                    try:
                        ticket = self.journal.write(op.entry(time.time()))
                    except OSError as exc:  # the spend still waits in memory; only the crash safety is gone
                        journal_error = exc
                self._queue.append(op)
                self._usd += op.amount
                self._start_drainer_locked()
        if ticket is not None and self.policy.journal_sync == "always" and self.journal is not None:
            try:
                self.journal.commit(ticket)
            except OSError as exc:  # in the OS but maybe not on disk: an app crash keeps it, a power loss not
                journal_error = exc
        if fits and (journal_error is not None or self._journal_failing):
            if ticket is not None:
                self._journal_result("write", None)  # the line is in the file
                if self.policy.journal_sync == "always":
                    self._journal_result("sync", journal_error)
            else:
                self._journal_result("write", journal_error)
        if not fits:
            if self._closed:
                reason = "the engine is closed"
            elif self.policy.size:
                reason = f"the backlog is full ({self.policy.size} waiting)"
            else:
                reason = "the backlog is off (size 0)"
            self._drop(op, reason)
            return False
        self._count("backlogged", 1)
        if not self._idempotent and not self._warned_not_idempotent:
            self._warned_not_idempotent = True
            _log.warning(
                "budget engine: ledger %s takes no op_id; a replayed cost whose first reply was lost may "
                "count twice",
                self.ledger.uri,
            )
        return True

    def _start_drainer(self) -> None:
        with self._lock:
            self._start_drainer_locked()

    def _start_drainer_locked(self) -> None:
        if self._drainer is None or self._drainer_pid != os.getpid():
            self._drainer_pid = os.getpid()
            self._drainer = threading.Thread(
                target=_drain,
                args=(weakref.ref(self), self._wake, self.policy),
                name="llmcost-ledger-backlog",
                daemon=True,
            )
            self._drainer.start()

    def _journal_result(self, kind: str, error: OSError | None) -> None:
        """Log a journal whose writes or syncs (`kind`) stop failing (once) or work again; count each
        failure. The two are tracked apart: a background sync that works says nothing of the writes."""
        if error is None:
            if kind in self._journal_failing:
                self._journal_failing.discard(kind)
                _log.warning("budget engine: the backlog journal %s is %s again", self._journal_path,
                             "written" if kind == "write" else "synced")  # fmt: skip
            return
        self._count("journal_errors", 1)
        if kind in self._journal_failing:
            return
        self._journal_failing.add(kind)
        if kind == "sync":
            _log.error(
                "budget engine: syncing the backlog journal %s failed (%s); queued costs are in the file "
                "but maybe not on the disk: a crash of the app keeps them, a power loss before the "
                "ledger is back could lose them",
                self._journal_path, error,
            )  # fmt: skip
            return
        _log.error(
            "budget engine: writing the backlog journal %s failed (%s); queued costs are kept in memory "
            "only, and a crash of the app before the ledger is back would lose them",
            self._journal_path, error,
        )  # fmt: skip

    def _journal_synced(self, error: OSError | None) -> None:
        """The journal's background sync ("interval" mode) reports here: counted and logged like a write."""
        self._journal_result("sync", error)

    @property
    def _journal_path(self) -> str | None:
        return None if self.journal is None else str(self.journal.path)

    def _done(self, op: PendingOp) -> None:
        """Mark a write that left the queue (applied, or dropped and reported) as done in the journal."""
        if self.journal is None:
            return
        try:
            self.journal.done(op.op_id)
        except OSError as exc:  # harmless: the next start re-sends it and the ledger applies its id once
            self._count("journal_errors", 1)
            _log.warning("budget engine: marking a cost done in the backlog journal failed (%s)", exc)

    def _drop(self, op: PendingOp, reason: str) -> None:
        self._count("dropped", 1)
        self._count("lost_usd", op.amount)
        with self._lock:
            self._dropped_since_log += 1
            self._lost_since_log += op.amount
            now = time.monotonic()
            if now - self._last_drop_log < 10.0:
                return  # an outage can drop thousands: one line per 10 s says it all
            count, lost = self._dropped_since_log, self._lost_since_log
            self._dropped_since_log, self._lost_since_log, self._last_drop_log = 0, Decimal(0), now
        _log.error(
            "budget engine: spend lost: %s $%s on %s dropped (%s); %d cost(s), $%s lost since the last report",
            op.what, op.amount, op.key, reason, count, lost,
        )  # fmt: skip

    def _replay(self, limit: int | None, *, wait: float | None, call_path: bool) -> tuple[int, bool]:
        """Apply waiting writes oldest first until `limit`, the queue is empty or one fails.

        Returns (writes that went through, whether one failed). Only one replayer runs at a time; the
        call path waits at most `wait` for another one to finish its call.
        """
        if not self._replaying.acquire(timeout=-1 if wait is None else wait):
            return 0, False
        done = 0
        try:
            while limit is None or done < limit:
                with self._lock:
                    if not self._queue:
                        break
                    op = self._queue[0]
                if time.monotonic() - op.queued > self.policy.max_age:
                    self._pop(op)
                    self._drop(op, f"it waited over {self.policy.max_age:g} s for the ledger")
                    continue
                try:
                    spent = self._apply(op)
                except Exception as exc:
                    self._failed(op, exc, call_path)
                    return done, True
                self._pop(op)
                done += 1
                self._count("replayed", 1)
                self._applied(op, spent)
            recovered = 0
            if done:
                self._outage_replayed += done
                if not self._queue:
                    recovered, self._outage_replayed, self._background_failing = self._outage_replayed, 0, False
        finally:
            self._replaying.release()
        if recovered:
            _log.warning(
                "budget engine: the ledger %s answers again; %d queued cost(s) replayed", self.ledger.uri, recovered
            )
        elif done:
            self._wake.set()  # the ledger is back: let the drainer take the rest now
        return done, False

    def _pop(self, op: PendingOp) -> None:
        with self._lock:
            if not (self._queue and self._queue[0] is op):
                return
            self._queue.popleft()
            self._usd -= op.amount
        self._done(op)

    def _failed(self, op: PendingOp, exc: Exception, call_path: bool) -> None:
        if call_path:
            self._count("errors", 1)
            _log.error("budget engine: the ledger still fails (%s); %d cost(s) wait", exc, len(self._queue))
            return
        self._count("replay_errors", 1)
        if not self._background_failing:
            self._background_failing = True
            _log.warning(
                "budget engine: replaying %s $%s on %s failed (%s); retrying with backoff",
                op.what, op.amount, op.key, exc,
            )  # fmt: skip
        else:
            _log.debug("budget engine: replay failed again (%s)", exc)

    def _retire(self) -> bool:
        """The drainer's exit check: True (and the handle cleared) when nothing waits or we closed."""
        with self._lock:
            if self._queue and not self._closed:
                return False
            self._drainer = None
            return True

    # -- lifecycle --
    def close(self, timeout: float = 5.0) -> None:
        """Stop the drainer, make a last attempt, and log what never reached the ledger."""
        with self._lock:
            self._closed = True
            drainer = self._drainer
        self._wake.set()
        if drainer is not None and drainer is not threading.current_thread():
            drainer.join(timeout)
        if self._queue:
            self._replay(None, wait=timeout, call_path=False)
        count, usd = self.pending()
        journal, kept = self.journal, 0
        if journal is not None:
            kept = journal.pending()
            journal.close()
        if kept:
            _log.warning(
                "budget engine: closing with %d cost(s), $%s, that never reached the ledger %s; %d of them are "
                "kept in the backlog journal %s: the next process started with it replays them",
                count, usd, self.ledger.uri, kept, self._journal_path,
            )  # fmt: skip
            if count > kept:
                _log.error("budget engine: %d of those costs could not be journaled: that spend is lost",
                           count - kept)  # fmt: skip
        elif count:
            _log.error(
                "budget engine: closing with %d cost(s), $%s, that never reached the ledger %s: that spend is lost",
                count, usd, self.ledger.uri,
            )  # fmt: skip


def _drain(ref: weakref.ReferenceType[Backlog], wake: threading.Event, policy: BacklogPolicy) -> None:
    """The background retry: replays with exponential backoff while anything waits.

    Holds the backlog only weakly between attempts, so an owner that is dropped without `close()`
    does not keep a thread alive for ever.
    """
    delay = policy.retry_initial
    while True:
        wake.wait(delay)
        wake.clear()
        backlog = ref()
        if backlog is None:
            return
        if backlog._closed:
            backlog._retire()
            return
        done, failed = backlog._replay(None, wait=None, call_path=False)
        if backlog._retire():
            return
        delay = policy.retry_initial if done or not failed else min(delay * 2, policy.retry_max)
        del backlog
