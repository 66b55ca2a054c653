"""The backlog's journal: spend waiting for the ledger, on disk, so a crash of the app does not lose it.

Why: the backlog (`backlog.py`) keeps writes the ledger could not take in memory; an app killed during
an outage (OOM, kill -9, a node lost) used to lose every one of them. With a journal each queued write
is appended to a file before `submit` returns; the next process started with the same path reads it
back and replays what the ledger never confirmed. The ledgers apply each write's `op_id` once, so a
write that did land before the crash (its reply lost, or its "done" mark) counts once.

The file, one JSON object per line:

* ``{"v": 1, "op": "queued", "op_id": ..., "budget": ..., "scope": ..., "window": {...}, "amount": "0.42",
  "now": <ledger time>, "queued_at": <wall time>, "reservation": {...}}`` — everything needed to send the
  write again unchanged: amounts as Decimal strings, the window with its buckets and expiry (not the
  budget's window spec, which a config change could move), and for a settle its reservation.
* ``{"v": 1, "op": "done", "op_id": ...}`` — the ledger took it (or it was dropped and reported lost).

A settle is re-sent as the same settle, not turned into a record: every built-in ledger that outlives
the process (SQLite, Redis) keeps a hold under its id in the ledger itself, `settle` needs nothing but
that id, the budget key and the window, and it commits the cost whether the hold is still there or
has expired (`base.py`). So another process can settle a crashed process's hold: the hold is freed at
once instead of blocking the budget until its TTL, and the write keeps its op id, which is what makes
a replay of a write that had landed count once. (A `memory://` ledger dies with the process; there
the journal has nothing to protect.)

Durability: queueing only happens during an outage, but then on every call, so what a queued line
costs the call is what an outage costs the app. A line is always written to the file (one `write`, into
the OS's page cache) before `submit` returns; when it reaches the disk is `journal_sync`
(`BacklogPolicy`, ``backlog: journal_sync:`` in the config):

* ``interval`` (the default): a background thread `fdatasync`s within `journal_sync_interval` (0.05 s):
  at once when a line comes, then at most once per interval while lines keep coming. The default
  because of what the journal is for, a crash of the app (kill -9, the OOM killer, an interpreter
  that dies): the page cache belongs to the kernel and outlives the process, so a written line is as
  safe from those as a synced one. Only a power loss or a kernel crash inside the interval can take
  the last lines, and that takes the machine with them (and often its disk).
* ``always``: synced before `submit` returns, for a journal that must outlive the machine (a volume
  that another node mounts after a node loss). With group commit: the line is written under the
  backlog's queue lock (the file keeps the queue's order) and the sync is waited for after that lock
  is released (`commit`). One `fdatasync` runs at a time and covers every line written before it
  began; callers that queued while it ran wait for it to end, and the first of them syncs for all
  (leader/follower). One thread alone still pays a whole sync per queued call.

Measured with `benchmarks/journal_bench.py` (Redis stopped, every call queues and makes its one ledger
attempt; a `fdatasync` takes 3-4 ms on this VM's disk; 3 s per case, 3 runs, another benchmark busy on
both cores at nice 10, so the 8-thread medians swing with the scheduler):

=====================================  =======  ===========  =================  ====================
journal                                threads  calls/s      median call (ms)   fdatasyncs
=====================================  =======  ===========  =================  ====================
none (memory only, the floor)          1        2700-3200    0.28-0.33
before group commit (sync per write)   1        226-233      4.0                one per write
``always``                             1        225-244      4.0                one per write
``interval``                           1        1900-2400    0.34-0.43          ~18 per second
none (memory only, the floor)          8        2000-3250    0.26-3.0
before group commit (sync per write)   8        654-698      8.9-9.5 (p99 ~55)  one per write
``always``                             8        975-1110     5.2-5.8 (p99 ~28)  one per ~3.4 writes
``interval``                           8        1500-2000    0.5-4.7            ~15 per second
=====================================  =======  ===========  =================  ====================

"done" lines are written without a sync in both modes: a crash of the process keeps them (they are in
the OS), a power loss may lose a few, and then the next start re-sends writes that had landed, which
the ledger's op id makes harmless. When nothing waits any more the file is truncated (synced); while
writes keep waiting, the file is rewritten with only the live ones once the finished lines outnumber
them (at least 1024), through a synced temporary file renamed over the journal. `close` syncs what
is not yet on disk.

One process per journal: the file ``<path>.lock`` is locked with `flock`; a second process (or a
second engine in this one) opening the same path gets `JournalInUseError`, which says what to do. Use a
path per process that stays the same across its restarts (a replica or worker name, not the pid), so
the restarted process finds what its predecessor left. A child forked from the owner neither writes nor
holds the journal (its copy is closed at fork); it keeps its own backlog in memory.

Workers without a stable name (gunicorn's or uvicorn's, all with one ``$HOSTNAME``) share a directory
instead: a journal path that ends in ``/`` (or names an existing directory) is a folder of slots,
``slot-0.jsonl``, ``slot-1.jsonl``, ... Each process takes the lowest slot no running process holds, so
a worker restarted by its master takes the slot its dead predecessor let go and replays it. Slots left
behind when fewer processes come back (4 workers, then 2) are adopted at start: a process that finds a
slot with content that nobody holds takes its lock, copies its live lines into its own slot (synced),
then empties it. A crash between the two leaves the lines in both files, which the op ids make harmless.
Slots are emptied, never deleted: deleting a locked file would let two processes lock "the same" slot.

The file (created 0600) holds budget names, scope keys (user and tenant ids) and amounts: never prompt
or response text, never API keys. POSIX only (`fcntl`); keep it on a local disk (`flock` on network
file systems is not reliable everywhere).

Reading never fails on bad content: a torn last line (kill -9 mid-append) or garbage is skipped with a
warning naming the file and line, and everything readable is kept.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..windows import Window
from .backlog import check_sync
from .base import BudgetKey, Reservation

_log = logging.getLogger(__name__)

VERSION = 1
COMPACT_AFTER = 1024
"""Finished lines that may pile up (and at least as many as the live ones) before the file is rewritten."""
_WARN_LINES = 10
"""Bad lines warned about one by one when reading; past that, one summary line."""
MAX_SLOTS = 1024
"""Slots a journal directory may have: more processes than this on one directory is a misconfiguration."""
_SLOT_NAME = re.compile(r"slot-(\d+)\.jsonl")


class JournalInUseError(ConfigError):
    """Another process (or another engine of this one) holds the journal: two replayers would double up."""


@dataclass(frozen=True)
class JournalEntry:
    """One queued write read back from the journal: what to send and when it was queued (wall clock)."""

    op_id: str
    key: BudgetKey
    window: Window
    amount: Decimal
    now: float
    reservation: Reservation | None
    queued_at: float


# -- the line format -------------------------------------------------------------------------------------
def _window_json(window: Window) -> dict[str, Any]:
    return {
        "start": window.start.isoformat(),
        "end": window.end.isoformat(),
        "bucket": window.bucket,
        "buckets": list(window.buckets),
        "alert_id": window.alert_id,
        "keep_until": window.keep_until.isoformat(),
        "rolling": window.rolling,
    }


def encode_queued(entry: JournalEntry) -> bytes:
    """The journal line of a queued write."""
    record: dict[str, Any] = {
        "v": VERSION,
        "op": "queued",
        "op_id": entry.op_id,
        "budget": entry.key.budget,
        "scope": entry.key.scope,
        "window": _window_json(entry.window),
        "amount": str(entry.amount),
        "now": entry.now,
        "queued_at": entry.queued_at,
    }
    hold = entry.reservation
    if hold is not None:
        record["reservation"] = {
            "id": hold.id,
            "budget": hold.key.budget,
            "scope": hold.key.scope,
            "amount": str(hold.amount),
            "expires_at": hold.expires_at,
        }
        if hold.window != entry.window:
            record["reservation"]["window"] = _window_json(hold.window)
    return (json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def encode_done(op_id: str) -> bytes:
    return (json.dumps({"v": VERSION, "op": "done", "op_id": op_id}, separators=(",", ":")) + "\n").encode()


def _field(record: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = record.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ValueError(f"{name!r} is missing or not {getattr(kind, '__name__', kind)}")
    return value


def _text(record: Mapping[str, Any], name: str) -> str:
    value = _field(record, name, str)
    if not value or len(value) > 1000:
        raise ValueError(f"{name!r} is empty or too long")
    return str(value)


def _number(record: Mapping[str, Any], name: str) -> float:
    value = float(_field(record, name, (int, float)))
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name!r} is not a finite number")
    return value


def _money(record: Mapping[str, Any], name: str) -> Decimal:
    try:
        value = Decimal(_field(record, name, str))
    except InvalidOperation:
        raise ValueError(f"{name!r} is not a decimal amount") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{name!r} is not a finite, non-negative amount")
    return value


def _moment(record: Mapping[str, Any], name: str) -> datetime:
    moment = datetime.fromisoformat(_text(record, name))
    if moment.tzinfo is None:
        raise ValueError(f"{name!r} has no UTC offset")
    return moment


def _window(value: object) -> Window:
    if not isinstance(value, Mapping):
        raise ValueError("'window' is missing or not an object")
    buckets = value.get("buckets")
    if not isinstance(buckets, list) or not buckets or not all(isinstance(b, str) and b for b in buckets):
        raise ValueError("'window.buckets' is not a list of bucket ids")
    bucket = _text(value, "bucket")
    if bucket not in buckets:
        raise ValueError("'window.bucket' is not among its buckets")
    return Window(
        start=_moment(value, "start"),
        end=_moment(value, "end"),
        bucket=bucket,
        buckets=tuple(buckets),
        alert_id=_text(value, "alert_id"),
        keep_until=_moment(value, "keep_until"),
        rolling=bool(_field(value, "rolling", bool)),
    )


def decode(line: bytes) -> tuple[str, str, JournalEntry | None]:
    """(kind, op id, entry) of one line: ("queued", id, entry) or ("done", id, None); ValueError if bad."""
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if record.get("v") != VERSION:
        raise ValueError(f"unknown format version {record.get('v')!r} (this version reads {VERSION})")
    kind, op_id = record.get("op"), _text(record, "op_id")
    if len(op_id) > 200:  # what every ledger takes (`base.check_op`): a longer one would block the queue
        raise ValueError("'op_id' is longer than 200 characters")
    if kind == "done":
        return "done", op_id, None
    if kind != "queued":
        raise ValueError(f"unknown record kind {kind!r}")
    window = _window(record.get("window"))
    key = BudgetKey(_text(record, "budget"), _text(record, "scope"))
    hold: Reservation | None = None
    raw = record.get("reservation")
    if raw is not None:
        if not isinstance(raw, dict):
            raise ValueError("'reservation' is not an object")
        hold_window = _window(raw["window"]) if "window" in raw else window
        hold = Reservation(
            _text(raw, "id"),
            BudgetKey(_text(raw, "budget"), _text(raw, "scope")),
            hold_window,
            _money(raw, "amount"),
            _number(raw, "expires_at"),
        )
    entry = JournalEntry(op_id, key, window, _money(record, "amount"), _number(record, "now"), hold,
                         _number(record, "queued_at"))  # fmt: skip
    return "queued", op_id, entry


def read_journal(path: str | os.PathLike[str]) -> tuple[list[JournalEntry], list[tuple[int, str]]]:
    """The writes a journal file holds that were never marked done, in order, and its bad lines.

    Bad lines come back as (line number, reason); they never stop the reading. Reads without the lock:
    for inspection (and for the owner, which holds it).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return [], []
    live: dict[str, JournalEntry] = {}
    bad: list[tuple[int, str]] = []
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if number == len(lines):  # no newline after it: an append that never finished
            bad.append((number, "torn last line (an append cut short, e.g. by kill -9)"))
            continue
        try:
            kind, op_id, entry = decode(line)
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            bad.append((number, str(exc)))
            continue
        if entry is not None:
            live.setdefault(op_id, entry)
        else:
            live.pop(op_id, None)
    return list(live.values()), bad


def is_slot_directory(path: str | os.PathLike[str]) -> bool:
    """Whether a journal path means a directory of slots (ends in a separator or is a directory)."""
    text = os.fspath(path)
    return text.endswith(("/", os.sep)) or os.path.isdir(text)


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _try_lock(lock_path: Path) -> tuple[int | None, str]:
    """(descriptor holding the lock, "") or (None, the holder's pid as it wrote it) when someone has it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        return None, holder
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd, ""


def _empty(path: Path) -> None:
    """Truncate a file durably (an adopted slot: its lines now live in the adopter's)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, 0)
        _sync(fd)
    finally:
        os.close(fd)


def _read_warning(path: Path) -> list[JournalEntry]:
    """`read_journal`, logging its bad lines (one by one up to `_WARN_LINES`, then a summary)."""
    entries, bad = read_journal(path)
    for number, reason in bad[:_WARN_LINES]:
        _log.warning("budget backlog journal %s, line %d skipped: %s", path, number, reason)
    if len(bad) > _WARN_LINES:
        _log.warning("budget backlog journal %s: %d more bad lines skipped (lines %d to %d)",
                     path, len(bad) - _WARN_LINES, bad[_WARN_LINES][0], bad[-1][0])  # fmt: skip
    return entries


# -- the file, owned by one process -----------------------------------------------------------------------
_OPEN: weakref.WeakSet[BacklogJournal] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for journal in list(_OPEN):
        journal._abandon()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _sync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def _sync_dir(path: Path) -> None:
    """Make a new or renamed entry of the directory durable (not possible on every platform)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class BacklogJournal:
    """An append-only journal of queued ledger writes, locked to this process (see the module doc).

    Opening it takes the lock and reads what a previous process left (`recovered`), rewriting the file
    clean when it held finished or bad lines. `append` / `done` / `close` are thread-safe; `append`
    raises OSError when the disk refuses (the caller keeps the write in memory).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: str = "interval",
        sync_interval: float = 0.05,
        on_sync: Callable[[OSError | None], None] | None = None,
    ) -> None:
        """`sync` is "always" (`append` returns once the line is on disk) or "interval" (a background
        thread syncs within `sync_interval` seconds); `on_sync` hears each background sync's outcome
        (None: it worked), since no caller is there to see its error. ValueError for a bad mode."""
        check_sync(sync, sync_interval)
        self.directory = Path(os.fspath(path)) if is_slot_directory(path) else None
        """The slot directory the journal's file was taken from (None: `path` is the file itself)."""
        self.path = Path(os.fspath(path))
        self.lock_path = _lock_path(self.path)
        self.adopted: dict[Path, int] = {}
        """Slots of processes that are gone, emptied into this one at open: slot file -> writes taken over."""
        self.sync_mode = sync
        self.sync_interval = float(sync_interval)
        self.syncs = 0
        """fdatasync calls made for queued lines (with group commit: fewer than the lines)."""
        self._on_sync = on_sync
        self._lock = threading.Lock()  # the file, its live lines, the counters below
        self._sync_lock = threading.Lock()  # one fdatasync at a time; whoever waits on it shares the next
        self._written = 0  # queued lines appended so far: a line's ticket is the count after it
        self._synced = 0  # tickets up to this one are on disk
        self._failed_through = 0  # tickets up to this one were in a sync that failed: never called durable
        self._failure: OSError | None = None
        self._syncer: threading.Thread | None = None
        self._closing = threading.Event()
        self._live: dict[str, bytes] = {}
        self._dead = 0  # lines in the file that no longer matter
        self._torn = False  # a failed append may have left half a line: start the next one on its own
        self._abandoned = False
        self._warned_forked = False
        self._lock_fd: int | None = None
        self._fd: int | None = None
        orphans: list[tuple[Path, int]] = []
        try:
            if self.directory is not None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._lock_fd = self._take_slot(self.directory)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock_fd = self._take_lock()
            self.recovered = _read_warning(self.path)
            if self.directory is not None:
                for orphan in self._other_slots(self.directory):
                    fd: int | None = None
                    try:
                        fd, _ = _try_lock(_lock_path(orphan))
                        if fd is None:
                            continue  # a running process holds it
                        found = _read_warning(orphan)
                    except OSError as exc:  # left for a later start: this process's own slot still works
                        if fd is not None:
                            os.close(fd)
                        _log.error("budget backlog journal %s: cannot read %s, a slot no running process holds "
                                   "(%s); its writes stay there for the next process to take over",
                                   self.path, orphan, exc.strerror or exc)  # fmt: skip
                        continue
                    orphans.append((orphan, fd))
                    mine = {e.op_id for e in self.recovered}
                    theirs = [e for e in found if e.op_id not in mine]
                    self.recovered.extend(theirs)
                    self.adopted[orphan] = len(theirs)
            self._live = {e.op_id: encode_queued(e) for e in self.recovered}
            size = self.path.stat().st_size if self.path.exists() else 0
            clean = b"".join(self._live.values())
            if size != len(clean):  # finished, bad, torn or adopted lines: start from the live ones only
                self._replace(clean)
            for orphan, _ in orphans:  # their lines are on disk in this slot now
                _empty(orphan)
                if self.adopted[orphan]:
                    _log.warning("budget backlog journal %s: took over %d write(s) from %s, a slot no running "
                                 "process holds", self.path, self.adopted[orphan], orphan)  # fmt: skip
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            if created:
                _sync_dir(self.path.parent)
        except JournalInUseError:
            raise
        except OSError as exc:
            self._close_fds()
            raise ConfigError(
                f"cannot use {self.path} as the backlog journal ({exc.strerror or exc}); give a writable "
                "path on a local disk, or no journal to keep the backlog in memory only",
                field="backlog.journal",
            ) from exc
        finally:
            for _, fd in orphans:  # released once emptied (or, on an error, untouched for the next process)
                with contextlib.suppress(OSError):
                    os.close(fd)
        _OPEN.add(self)

    def _take_lock(self) -> int:
        fd, holder = _try_lock(self.lock_path)
        if fd is not None:
            return fd
        who = "this process: another budget engine here has it open; close that one first" \
            if holder == str(os.getpid()) else f"pid {holder}"  # fmt: skip
        raise JournalInUseError(
            f"the backlog journal {self.path} is in use by another process ({who}). Two processes "
            "replaying one journal would count spend twice: give each process its own path that stays "
            "the same across its restarts (a replica or worker name, not the pid, so a restarted process "
            "finds what its predecessor left), e.g. /var/lib/app/llmcost-backlog-${HOSTNAME}, or a "
            "directory (a path ending in /) in which each process takes a free slot",
            field="backlog.journal",
        )

    def _take_slot(self, directory: Path) -> int:
        """Lock the lowest slot no running process holds and make it this journal's file."""
        for number in range(MAX_SLOTS):
            path = directory / f"slot-{number}.jsonl"
            fd, _ = _try_lock(_lock_path(path))
            if fd is not None:
                self.path, self.lock_path = path, _lock_path(path)
                return fd
        raise JournalInUseError(
            f"all {MAX_SLOTS} slots of the backlog journal directory {directory} are held by running "
            "processes: give each group of processes its own directory",
            field="backlog.journal",
        )

    def _other_slots(self, directory: Path) -> list[Path]:
        """The directory's other slot files that hold something (whether a running process holds them is
        for the caller's lock to find out)."""
        found: list[Path] = []
        for path in sorted(directory.iterdir()):
            if path == self.path or not _SLOT_NAME.fullmatch(path.name):
                continue
            with contextlib.suppress(OSError):  # gone meanwhile: nothing to take over
                if path.is_file() and path.stat().st_size:
                    found.append(path)
        return found

    # -- writing --
    def append(self, entry: JournalEntry) -> bool:
        """Write a queued write, durable as the sync mode says (False: a forked child, which keeps no journal).

        "always": synced before this returns (sharing the sync with concurrent appends); "interval":
        in the OS before this returns, on disk within the interval.
        """
        ticket = self.write(entry)
        if ticket is None:
            return False
        if self.sync_mode == "always":
            self.commit(ticket)
        return True

    def write(self, entry: JournalEntry) -> int | None:
        """Append a queued write's line to the file (the OS holds it: it survives a crash of the app).

        Returns its ticket for `commit`, None in a forked child. Cheap (one `write`): callers that must
        keep an order (the backlog, under its queue's lock) write in that order and commit afterwards,
        outside their lock, so concurrent callers share one sync. In "interval" mode it makes sure the
        background syncer runs.
        """
        line = encode_queued(entry)
        with self._lock:
            if self._fd is None:
                self._inert()
                return None
            data = b"\n" + line if self._torn else line
            try:
                _write_all(self._fd, data)
            except OSError:
                self._torn = True
                raise
            self._torn = False
            self._live[entry.op_id] = line
            self._written += 1
            if self.sync_mode == "interval" and self._syncer is None:
                self._start_syncer_locked()
            return self._written

    def commit(self, ticket: int) -> None:
        """Return once the line of `ticket` is on disk: group commit.

        One fdatasync at a time, under `_sync_lock`; it covers every line written before it started.
        Callers that arrive while it runs wait for the lock; the first one in syncs for all of them
        (everything written so far), and the others find their ticket covered and return without a
        sync of their own. So a caller waits for the sync running when it came and one more at most,
        however many callers queue, and one sync serves all who queued meanwhile. Raises OSError
        when the sync that covered the ticket failed (after a failed fdatasync the kernel may have
        dropped the pages: a later success proves nothing for them).
        """
        if ticket <= self._synced and ticket > self._failed_through:
            return
        with self._sync_lock:
            self._raise_if_failed(ticket)
            if ticket <= self._synced:
                return  # the sync this caller waited behind covered it
            self._sync_written()
            self._raise_if_failed(ticket)

    def _raise_if_failed(self, ticket: int) -> None:
        failure = self._failure
        if ticket <= self._failed_through and failure is not None:
            raise OSError(failure.errno, f"syncing the backlog journal {self.path} failed: "
                                         f"{failure.strerror or failure}")  # fmt: skip

    def _sync_written(self) -> None:
        """fdatasync every line written so far (`_sync_lock` held); raises OSError if it fails.

        Syncs a duplicate of the descriptor: compaction or `close` may replace or close `_fd` meanwhile
        (under `_lock` only), and a duplicate keeps the sync on the file it meant.
        """
        with self._lock:
            if self._fd is None or self._synced >= self._written:
                return
            target, fd = self._written, os.dup(self._fd)
        try:
            _sync(fd)
        except OSError as exc:
            with self._lock:
                self._failed_through, self._failure = max(self._failed_through, target), exc
            raise
        finally:
            os.close(fd)
        with self._lock:
            self._synced = max(self._synced, target)
            self.syncs += 1

    def _start_syncer_locked(self) -> None:
        self._syncer = threading.Thread(
            target=_sync_in_background,
            args=(weakref.ref(self), self._closing, self.sync_interval),
            name="llmcost-backlog-journal-sync",
            daemon=True,
        )
        self._syncer.start()

    def _background_sync(self) -> bool:
        """The syncer's step: sync what waits; False (and the handle cleared) when nothing does."""
        with self._lock:
            if self._fd is None or self._synced >= self._written:
                self._syncer = None
                return False
        error: OSError | None = None
        try:
            with self._sync_lock:
                self._sync_written()
        except OSError as exc:
            error = exc
        if self._on_sync is not None:
            try:
                self._on_sync(error)
            except Exception:  # the owner's logging: never let it end the syncer
                _log.exception("budget backlog journal %s: reporting a sync failed", self.path)
        elif error is not None:
            _log.error("budget backlog journal %s: syncing failed (%s); retrying", self.path, error)
        return True

    def unsynced(self) -> int:
        """Queued lines written but not yet known on disk (0 once everything written is synced)."""
        with self._lock:
            return self._written - self._synced

    def done(self, op_id: str) -> None:
        """Mark a write finished (no sync: see the module doc); truncate or compact when due."""
        with self._lock:
            if self._fd is None or self._live.pop(op_id, None) is None:
                return
            if not self._live:
                os.ftruncate(self._fd, 0)
                _sync(self._fd)
                self._dead, self._torn = 0, False
                self._synced = self._written  # nothing left to sync: every line written is done
                return
            line = encode_done(op_id)
            try:
                _write_all(self._fd, b"\n" + line if self._torn else line)
            except OSError:
                self._torn = True
                raise
            self._torn = False
            self._dead += 2
            if self._dead >= max(COMPACT_AFTER, len(self._live)):
                self._compact()

    def pending(self) -> int:
        """Writes in the file not marked done (0 once closed, and in a forked child)."""
        with self._lock:
            return len(self._live) if self._fd is not None else 0

    def _compact(self) -> None:
        """Rewrite the file with the live lines only (lock held)."""
        self._replace(b"".join(self._live.values()))
        assert self._fd is not None
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._dead = 0
        self._synced = self._written  # the rewritten file, with every live line, was synced

    def _replace(self, data: bytes) -> None:
        """Put `data` in place of the file, atomically and durably (a synced copy renamed over it)."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, data)
            _sync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        _sync_dir(self.path.parent)

    def _inert(self) -> None:
        """Warn once that a forked child's journal writes nothing."""
        if self._abandoned and not self._warned_forked:
            self._warned_forked = True
            _log.warning(
                "budget backlog journal %s belongs to the parent process; this forked process keeps its "
                "backlog in memory only (create the budget engine after the fork, with a journal path of "
                "its own, to journal it)",
                self.path,
            )

    # -- lifecycle --
    def _abandon(self) -> None:
        """In a forked child: let go of the parent's file and lock without unlocking them for it."""
        self._lock = threading.Lock()  # the parent's may have been held by another thread at fork
        self._sync_lock = threading.Lock()
        self._closing = threading.Event()  # its lock too
        self._syncer = None  # the parent's thread does not exist here
        self._abandoned = True
        self._close_fds()

    def _close_fds(self) -> None:
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                with contextlib.suppress(OSError):
                    os.close(fd)  # closing the last descriptor releases the flock

    def close(self) -> None:
        """Sync what is not yet on disk, then release the file and the lock; what was not marked done
        stays for the next process."""
        self._closing.set()  # the background syncer ends at its next step
        try:
            with self._sync_lock:
                self._sync_written()
        except OSError as exc:
            _log.error("budget backlog journal %s: the last sync before closing failed (%s); a power loss "
                       "now could lose the last queued costs", self.path, exc)  # fmt: skip
        with self._lock:
            self._close_fds()
        _OPEN.discard(self)


def _sync_in_background(ref: weakref.ReferenceType[BacklogJournal], closing: threading.Event,
                        interval: float) -> None:  # fmt: skip
    """The "interval" mode's syncer: sync, then at most one sync per interval while lines keep coming.

    Syncs at once when woken (a line waits the interval at most, plus the sync), then sleeps the
    interval, so an outage costs one fdatasync per interval whatever the call rate. Ends when a step
    finds nothing written since the last sync (the next write starts it again), on `close`, or when
    the journal is gone; it holds the journal only weakly between steps.
    """
    while True:
        journal = ref()
        if journal is None or not journal._background_sync():
            return
        del journal
        if closing.wait(interval):
            return
