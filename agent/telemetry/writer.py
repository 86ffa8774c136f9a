"""The registry writer: one thread, one SQLite connection, group commit for every link.

Rules it keeps:

- **Acknowledge only what is durable.** A job's completion runs only after
  the transaction holding it has committed with ``synchronous=FULL``; a link
  sends its ACK (or REFUSE) from that completion, so a device frees a record
  only once a power cut can no longer lose it.
- **Group commit.** The thread takes every job queued within
  :data:`GROUP_WAIT` of the first, up to :data:`GROUP_RECORDS` records, into
  one transaction: one fsync serves every link that was waiting, and no link waits on an fsync in its own loop
  (links submit and go on; completions are called from this thread, so they
  must be thread-safe and quick).
- **Few GIL hand-overs.** A group's jobs run inside :meth:`Store.staging`:
  their samples go in together, with one statement, at the group's end
  (sqlite3 lets go of the GIL around every statement, and a busy link thread
  holds it long). The completions of a group wait, when another group is
  queued, for that group's two long statements: half wake their links as
  its rows go in, the rest as its commit syncs, so the links decode while
  SQLite works without the GIL instead of queueing the writer behind them.
  A group whose staged records meet stored ones is stored job by job.
- **A failure costs at most its job.** A group that meets an error is rolled
  back and its jobs are committed one by one, so a job that raises fails
  alone and its completion gets the error (no savepoint per job on the
  common path: they cost ~10 % of ingest). An
  operational error of the whole registry (``database is locked`` past the
  busy timeout, disk full, I/O error) rolls back the group, which is retried
  with back-off for up to ``retry_for`` seconds; then each job is tried once
  alone, and those that still meet the error fail (no ACK: the device keeps
  the records and sends them again). The thread never dies
  of a job; failures are logged and counted (:attr:`RegistryWriter.failures`).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edge_agent.store import Store

log = logging.getLogger("edge.writer")

GROUP_RECORDS = 1000      # records in one transaction, at most (a lone larger job still goes alone)
RETRY_FOR = 30.0          # seconds a group meeting "locked" or "disk full" is retried before it fails
GROUP_WAIT = 0.0          # seconds a group waits for more jobs after its first (see bench_ingest.py)


@dataclass(slots=True)
class Job:
    """Work for the registry: ``apply(store)`` inside the group's transaction.

    ``done(result, error)`` is called after the commit (``error`` None) or
    once the job has failed for good (``result`` None).
    """

    apply: Callable[[Store], Any]
    done: Callable[[Any, BaseException | None], None] | None = None
    records: int = 0
    what: str = "job"


class RegistryWriter:
    """Commits jobs from any thread into the registry at ``path``.

    With ``store`` given (and no thread started: ``inline=True``), jobs run at
    once in the caller's thread on that connection: tests and tools that want
    no thread use this; the rules above hold the same.
    """

    def __init__(self, path: str | Path | None = None, *, store: Store | None = None,
                 inline: bool = False, timeout: float = 10.0, retry_for: float | None = None,
                 synchronous: str = "FULL", group_wait: float = GROUP_WAIT):
        if (path is None) == (store is None):
            raise ValueError("give the registry path, or an open Store for an inline writer")
        self.path = Path(path) if path is not None else store.path  # type: ignore[union-attr]
        self.inline = inline
        self.retry_for = RETRY_FOR if retry_for is None else retry_for
        self.group_wait = group_wait
        self.failures = 0          # jobs that failed for good
        self.retries = 0           # group attempts that met an operational error
        self.commits = 0
        self.last_error: str | None = None
        # Jobs may keep what they learnt here (series ids); it is cleared
        # whenever a rollback may have undone some of it.
        self.cache: dict[Any, Any] = {}
        # Unbounded, and the C queue: a link's put and the writer's get cost
        # a fraction of queue.Queue's, whose locks are Python code.
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        # The last committed group's (job, result, error): their completions
        # are called once the next group's rows go in, or when the queue is empty.
        self._pending: list[tuple[Job, Any, BaseException | None]] = []
        self._store = store
        self._thread: threading.Thread | None = None
        if not inline:
            ready = threading.Event()
            failed: list[BaseException] = []
            self._thread = threading.Thread(target=self._run, args=(timeout, synchronous, ready, failed),
                                            name="registry writer", daemon=True)
            self._thread.start()
            ready.wait()
            if failed:
                raise failed[0]

    # -- API (any thread)

    def submit(self, job: Job) -> None:
        """Queue ``job``; its completion is called from the writer's thread (inline: at once)."""
        if self.inline:
            self._commit([job])
            self._complete()
        else:
            self._queue.put(job)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every job submitted so far is committed or failed; False on timeout."""
        if self.inline:
            return True
        done = threading.Event()
        self._queue.put(Job(apply=lambda store: None, done=lambda r, e: done.set(), what="flush"))
        return done.wait(timeout)

    def close(self) -> None:
        """Finish the queued jobs, then stop the thread and close the connection."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> "RegistryWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the thread

    def _run(self, timeout: float, synchronous: str, ready: threading.Event,
             failed: list[BaseException]) -> None:
        try:
            self._store = Store(self.path, timeout=timeout, synchronous=synchronous)
        except BaseException as e:   # handed to the constructor's caller
            failed.append(e)
            ready.set()
            return
        ready.set()
        try:
            while True:
                if self._pending and self._queue.empty():
                    self._complete()
                job = self._queue.get()
                if job is None:
                    return
                group, records = [job], job.records
                stop = False
                deadline = time.monotonic() + self.group_wait
                while records < GROUP_RECORDS:
                    try:
                        wait = deadline - time.monotonic()
                        nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    group.append(nxt)
                    records += nxt.records
                self._commit(group)
                if stop:
                    return
        finally:
            self._complete()
            self._store.close()

    def _complete(self, count: int | None = None) -> None:
        """Call the first ``count`` (default: all) completions of the last committed group."""
        part = self._pending if count is None else self._pending[:count]
        self._pending = [] if count is None else self._pending[count:]
        for job, result, error in part:
            if error is not None:
                self.failures += 1
                self.last_error = f"{job.what}: {error}"
            if job.done is not None:
                try:
                    job.done(result, error)
                except Exception:   # a completion must not stop the writer
                    log.exception("registry writer: completion of %s raised", job.what)

    def _commit(self, group: list[Job], retry: bool = True) -> None:
        """Commit ``group``; its completions wait in ``_pending`` (earlier ones are called here)."""
        store = self._store
        assert store is not None
        started = time.monotonic()
        delay = 0.05
        while True:
            try:
                with store.transaction():
                    if len(group) > 1:
                        # Staged: the jobs only take note; their rows go in at the block's end.
                        # Half the earlier completions wake their links as the rows go in,
                        # the rest as the commit syncs: both let go of the GIL for long.
                        half = (len(self._pending) + 1) // 2
                        with store.staging(on_insert=lambda: self._complete(half)):
                            results: list[tuple[Job, Any, BaseException | None]] = [
                                (job, job.apply(store), None) for job in group]
                        self._complete()
                    else:
                        self._complete()
                        results = [(group[0], group[0].apply(store), None)]
                self.commits += 1
                break
            except sqlite3.OperationalError as e:   # the registry's trouble: retry the group
                self._complete()
                self.cache.clear()
                self.retries += 1
                self.last_error = f"{e}"
                if not retry or time.monotonic() - started >= self.retry_for:
                    if len(group) > 1:
                        # Only the jobs that meet the error fail: try each alone, once.
                        for job in group:
                            self._commit([job], retry=False)
                        return
                    log.error("registry %s: %s; %s not stored (the device will send it again)",
                              self.path, e, group[0].what)
                    results = [(group[0], None, e)]
                    break
                log.warning("registry %s: %s; retrying in %.1f s", self.path, e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception as e:   # a job's own trouble, or staged records met stored ones
                self._complete()
                self.cache.clear()
                if len(group) > 1:
                    for job in group:
                        self._commit([job], retry)
                    return
                log.error("registry writer: %s failed: %s", group[0].what, e)
                results = [(group[0], None, e)]
                break
        self._complete()
        self._pending = results
