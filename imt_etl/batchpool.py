"""Numbered batches of independent work shared by forked worker processes and the caller.

Why fork: the batches read large in-memory tables; a forked worker sees them without pickling
(copy-on-write), and the caller keeps doing other work (the analysis tables) while the workers
build. Batch numbers are claimed one at a time from a shared counter, so the caller joins in
as soon as it is free and the load balances itself.

Workers only compute and write their own scratch files; their (small) results come back through
a pipe. An exception in a worker is raised again in the caller with the same type and message; a
worker that dies (killed, out of memory) fails the run with a clear error, never a silent gap.
Where fork is unsafe or missing (macOS, Windows) or `workers` is 1, the caller does every batch.

With `caller_helps=False` the caller only collects: one batch and two workers run `work(0)` in a
forked process while the caller does something else entirely (the FHIR write beside the tables).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

from imt_etl.errors import ImtEtlError
from imt_etl.faultpoints import also_kill

log = logging.getLogger(__name__)

T = TypeVar("T")


class WorkerFailed(ImtEtlError):
    """A worker process died before reporting its batches (killed, out of memory)."""


def can_fork() -> bool:
    return sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


class BatchPool(Generic[T]):
    """`work(n)` for n in range(total), by `workers - 1` forked processes plus the caller.

        with BatchPool(total, work, workers) as pool:   # workers start here
            other_work()                                # the caller is busy elsewhere
            results = pool.results()                    # the caller helps, then collects
    """

    def __init__(self, total: int, work: Callable[[int], T], workers: int, *, name: str = "batch",
                 caller_helps: bool = True):
        self.total, self.work, self.name = total, work, name
        # A caller that does not help leaves every batch to the workers: one more of them.
        limit = total if caller_helps else total + 1
        self.forked = max(0, min(workers, limit) - 1) if can_fork() else 0
        self.caller_helps = caller_helps or not self.forked
        self._results: dict[int, T] = {}
        self._pipes: dict[Connection, Any] = {}  # read end -> its process
        self._next: Any = None

    def __enter__(self) -> BatchPool[T]:
        if self.forked:
            context = multiprocessing.get_context("fork")
            self._next = context.Value("q", 0)
            for _ in range(self.forked):
                reader, writer = context.Pipe(duplex=False)
                process = context.Process(target=self._serve, args=(writer, os.getpid()),
                                          daemon=True,
                                          name=f"imt-etl {self.name} worker")
                process.start()
                writer.close()  # the worker holds the only write end: EOF when it exits
                self._pipes[reader] = process
            log.info("%s: %d worker process(es) started for %d batches", self.name,
                     self.forked, self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        for reader, process in self._pipes.items():
            if process.is_alive():
                process.terminate()
            process.join()
            reader.close()
        self._pipes.clear()

    def _claim(self) -> int:
        if self._next is None:
            n = len(self._results)
            return n if n < self.total else self.total
        with self._next.get_lock():
            n = self._next.value
            self._next.value = n + 1
        return n

    def _serve(self, pipe: Connection, parent: int) -> None:
        """A worker's life: claim, work, report, until no batch is left or one fails."""
        _die_with_parent(parent)
        also_kill(parent)  # a crash-test kill point reached here takes the whole run down
        gc.freeze()  # the inherited tables are never collected here: don't copy their pages
        n = -1
        try:
            while (n := self._claim()) < self.total:
                pipe.send(("done", n, self.work(n)))
        except BaseException as error:  # noqa: BLE001 - every failure goes to the caller
            pipe.send(("failed", n, _portable(error), traceback.format_exc()))
        finally:
            pipe.close()

    def results(self) -> list[T]:
        """Do unclaimed batches here (unless `caller_helps` is False), collect the workers' and
        return all in batch order."""
        try:
            while self.caller_helps and (n := self._claim()) < self.total:
                self._results[n] = self.work(n)
                self._drain(timeout=0)
            while self._pipes and any(not r.closed for r in self._pipes):
                self._drain(timeout=None)
        finally:
            self.__exit__()
        missing = [n for n in range(self.total) if n not in self._results]
        if missing:
            raise WorkerFailed(f"{self.name}: batches {missing[:10]} were never finished")
        return [self._results[n] for n in range(self.total)]

    def _drain(self, timeout: float | None) -> None:
        """Read every message waiting (or wait for the next one); raise a worker's failure."""
        open_pipes = [r for r in self._pipes if not r.closed]
        for reader in wait(open_pipes, timeout):
            try:
                message = reader.recv()
            except EOFError:  # the worker exited; fine if it said everything
                process = self._pipes[reader]
                process.join()
                reader.close()
                if process.exitcode != 0:
                    raise WorkerFailed(
                        f"{self.name}: worker process {process.pid} stopped with exit code "
                        f"{process.exitcode} (a negative code is the signal that killed it, "
                        "e.g. -9 when the system ran out of memory)") from None
                continue
            if message[0] == "done":
                self._results[message[1]] = message[2]
            else:
                _, n, error, trace = message
                log.debug("%s: batch %d failed in a worker:\n%s", self.name, n, trace)
                raise error


def _die_with_parent(parent: int) -> None:
    """SIGKILL this worker when its parent dies: an orphan must not go on writing scratch files
    that the next run (which clears and reuses the folder) would read as its own."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG (linux/prctl.h)
    except (OSError, AttributeError):  # pragma: no cover - only Linux forks workers
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _portable(error: BaseException) -> BaseException:
    """The error itself when it survives pickling, else a same-message stand-in."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any unpicklable error is replaced, never lost
        return ImtEtlError(f"{type(error).__name__}: {error}")
