"""Calls made at the same time share one round trip to a shared storage.

On Redis a decision costs far more in the round trip (two system calls, a wake-up of the server and
of the caller, the client's command and reply handling) than in the script itself, so the callers that
are waiting at the same moment are served by one script call that decides for all of them:

- `Combiner`, for threads: the first caller in becomes the leader and sends its own call; callers that
  arrive while it waits for the reply queue up, and the leader hands the queue to one of them when
  its reply is in, which sends all of them at once (leader/follower). A lone caller never waits for
  anyone: it leads at once, so batching costs a quiet process nothing but a lock.
- `AsyncBatcher`, for asyncio: the calls that the tasks of one event loop make in one loop iteration
  go out together once the ready tasks have had their turn.

Either way a failure of the shared call is the failure of every call in it: each caller raises an
error of its own, made by the storage's ``fail(cause)`` (so the limiter applies its fail-open or
fail-closed policy to each). The storage supplies ``send(calls) -> replies``, one reply per call in
order; what a call means is the storage's affair.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any


class Call:
    """One caller's pending request, and later its reply or the error of the batch it went in."""

    __slots__ = ("op", "key", "amount", "plan", "reply", "error", "_wake", "_lead")

    def __init__(self, op: str, key: str, amount: float, plan: Any) -> None:
        self.op = op
        self.key = key
        self.amount = amount
        self.plan = plan
        self.reply: Any = None
        self.error: BaseException | None = None
        self._wake: Any = None  # a held lock the caller blocks on until a leader releases it
        self._lead = False  # set with the wake-up when the caller is to send the queue itself


class BatchInterrupted(Exception):
    """The thread sending a batch was interrupted (e.g. KeyboardInterrupt): the batch's fate is unknown."""


class Combiner:
    """Leader/follower batching of the calls of many threads (see the module doc).

    At most one batch is in flight per combiner: while it is, new calls gather into the next one,
    so the batch grows with the number of callers waiting and the round trips stay few.
    """

    def __init__(
        self,
        send: Callable[[list[Call]], list[Any]],
        fail: Callable[[BaseException], BaseException],
        in_flight: int = 1,
    ) -> None:
        self._send = send
        self._fail = fail
        self._in_flight = in_flight
        self._lock = threading.Lock()
        self._queue: list[Call] = []
        self._leaders = 0
        #: batches sent and calls they carried (calls / batches = how many callers shared a round trip)
        self.batches = 0
        self.calls = 0
        _reset_in_forked_children(self)

    def call(self, op: str, key: str, amount: float, plan: Any) -> Any:
        """Queue one call, wait for its batch, and return its reply or raise the batch's error."""
        call = Call(op, key, amount, plan)
        with self._lock:
            if self._leaders >= self._in_flight:
                call._wake = wake = threading.Lock()
                wake.acquire()
                self._queue.append(call)
                lead = False
            else:
                self._leaders += 1
                lead = True
        if not lead:
            call._wake.acquire()  # released by the leader that sent this call, or to make it lead
            if not call._lead:
                return self._outcome(call)
        self._lead(call)
        return self._outcome(call)

    def _outcome(self, call: Call) -> Any:
        error = call.error
        if error is None:
            return call.reply
        failure = self._fail(error)
        if failure is error:
            raise error
        raise failure from error

    def pending(self) -> int:
        """Calls queued for the next batch now (for tests and diagnostics)."""
        with self._lock:
            return len(self._queue)

    def _lead(self, own: Call) -> None:
        """Send `own` call and every call queued now; then wake them, and hand on the lead."""
        with self._lock:
            batch, self._queue = self._queue, []
            batch.insert(0, own)
            self.batches += 1
            self.calls += len(batch)
        try:
            replies = self._send(batch)
        except Exception as exc:
            for call in batch:
                call.error = exc
        except BaseException:
            interrupted = BatchInterrupted("the thread sending this batch was interrupted")
            for call in batch:
                call.error = interrupted
            raise
        else:
            for call, reply in zip(batch, replies, strict=True):
                call.reply = reply
        finally:
            # Wake the callers of this batch, then hand the queue that gathered meanwhile to one of them.
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._leaders -= 1
                else:
                    successor._lead = True
                    del self._queue[0]  # it sends itself first, then the queue as it is when it wakes
            for call in batch:
                if call._wake is not None:
                    call._wake.release()
            if successor is not None:
                successor._wake.release()

    def _after_fork(self) -> None:
        # A child forked while another thread was in a batch would wait for that thread forever.
        self._lock = threading.Lock()
        self._queue = []
        self._leaders = 0


def _reset_in_forked_children(combiner: Combiner) -> None:
    ref = weakref.ref(combiner)

    def reset() -> None:
        alive = ref()
        if alive is not None:
            alive._after_fork()

    os.register_at_fork(after_in_child=reset)


class AsyncBatcher:
    """Sends the calls that the tasks of one event loop make in one loop iteration as one batch."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[list[Call]], Awaitable[list[Any]]],
        fail: Callable[[BaseException], BaseException],
    ) -> None:
        self._loop = loop
        self._send = send
        self._fail = fail
        self._pending: list[tuple[Call, asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.calls = 0

    def submit(self, op: str, key: str, amount: float, plan: Any) -> asyncio.Future[Any]:
        """Queue one call; the future gets its reply, or the error of the batch it went in."""
        future = self._loop.create_future()
        self._pending.append((Call(op, key, amount, plan), future))
        if len(self._pending) == 1:
            # after the tasks that are ready now have had their turn (and added their calls)
            self._loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        self.batches += 1
        self.calls += len(batch)
        task = self._loop.create_task(self._run(batch))
        self._sending.add(task)  # keep a reference until it is done
        task.add_done_callback(self._sending.discard)

    async def _run(self, batch: list[tuple[Call, asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._send([call for call, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the shared call failed: every call of the batch failed with it
            for _, future in batch:
                if not future.done():
                    error = self._fail(exc)
                    if error is not exc:
                        error.__cause__ = exc
                    future.set_exception(error)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if not future.done():  # (its caller may have been cancelled meanwhile)
                future.set_result(reply)
