"""Executors: one submit / as-completed protocol for a Dask cluster and for this process.

The engine submits tasks (a plain function and its arguments, tagged with the engine's own description of the
task) and takes their results as they finish, submitting more meanwhile. A task's result is what its function
returned or, if it raised (or its worker died), the exception: a failed task is a result like any other, on
Dask as in this process. Interrupts (``KeyboardInterrupt``, ``SystemExit``) are not results: they end the run.
"""

from __future__ import annotations

import abc
import heapq
import itertools
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple


class Done(NamedTuple):
    """A finished task.

    Attributes:
        task: what the task was submitted as (the caller's description).
        value: the function's return value, or the exception that failed the task.
        handle: the executor's handle of the task (a Dask future; None in this process), for :meth:`Executor.holders`.
    """

    task: Any
    value: Any
    handle: Any = None

    @property
    def failed(self) -> bool:
        """True if the task raised, or was lost with its worker."""
        return isinstance(self.value, BaseException)


class Executor(abc.ABC):
    """Runs tasks and yields them as they finish; a context manager that drops the unfinished ones on exit."""

    def __init__(self) -> None:
        #: Tasks submitted so far.
        self.submitted = 0

    @abc.abstractmethod
    def workers(self) -> int:
        """How many workers run tasks now (at least 1)."""

    @abc.abstractmethod
    def submit(self, task: Any, function: Callable[..., Any], /, *args: Any, near: list[str] | None = None,
               priority: int = 0, **kwargs: Any) -> None:
        """Queue ``function(*args, **kwargs)``, yielded by :meth:`as_completed` as ``Done(task, ...)``.

        Args:
            task: the caller's description of the task, given back with its result.
            near: workers to run it on if they can (others may take it).
            priority: tasks of higher priority start first; equal ones in the order submitted.
        """

    @abc.abstractmethod
    def as_completed(self) -> Iterator[Done]:
        """Yield each task as it finishes, until none is left; tasks may be submitted meanwhile."""

    def holders(self, done: Done) -> list[str] | None:
        """The workers that hold ``done``'s result (None if unknown or in this process)."""
        return None

    def cancel(self) -> None:
        """Drop every task not yet finished."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class InProcessExecutor(Executor):
    """Runs each task in this process when :meth:`as_completed` reaches it, by priority, then in submission order."""

    def __init__(self) -> None:
        super().__init__()
        self._queue: list[tuple[int, int, Any, Callable[[], Any]]] = []
        self._order = itertools.count()

    def workers(self) -> int:
        return 1

    def submit(self, task: Any, function: Callable[..., Any], /, *args: Any, near: list[str] | None = None,
               priority: int = 0, **kwargs: Any) -> None:
        self.submitted += 1
        heapq.heappush(self._queue, (-priority, next(self._order), task, lambda: function(*args, **kwargs)))

    def as_completed(self) -> Iterator[Done]:
        while self._queue:
            _, _, task, call = heapq.heappop(self._queue)
            try:
                value = call()
            except Exception as error:  # noqa: BLE001 - a failed task is a result, as on Dask
                value = error
            yield Done(task, value)

    def cancel(self) -> None:
        self._queue.clear()


class DaskExecutor(Executor):
    """Runs tasks on a ``distributed.Client``'s cluster; results are fetched in the background as tasks finish.

    A task's function and arguments must be picklable; ``near`` places a task on the workers named (for instance
    where a file is open already) without forbidding the others.
    """

    def __init__(self, client: Any) -> None:
        from distributed import as_completed

        super().__init__()
        self.client = client
        self._tasks: dict[Any, Any] = {}
        self._completed = as_completed(with_results=True, raise_errors=False)

    def workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def submit(self, task: Any, function: Callable[..., Any], /, *args: Any, near: list[str] | None = None,
               priority: int = 0, **kwargs: Any) -> None:
        self.submitted += 1
        placement = {"workers": near, "allow_other_workers": True} if near else {}
        future = self.client.submit(function, *args, pure=False, priority=priority, **placement, **kwargs)
        self._tasks[future] = task
        self._completed.add(future)

    def as_completed(self) -> Iterator[Done]:
        for future, result in self._completed:
            task = self._tasks.pop(future)
            if future.status == "error":  # raised, or lost with its worker too often (KilledWorker)
                result = result[1]  # as_completed gives (type, exception, traceback)
            yield Done(task, result, future)
            future.release()

    def holders(self, done: Done) -> list[str] | None:
        who_has = self.client.who_has([done.handle])
        return [address for addresses in who_has.values() for address in addresses] or None

    def cancel(self) -> None:
        if self._tasks:
            self.client.cancel(list(self._tasks))
            self._tasks.clear()
        self._completed.clear()


def executor_for(client: Any) -> Executor:
    """A :class:`DaskExecutor` on ``client``, or an :class:`InProcessExecutor` if it is None."""
    return InProcessExecutor() if client is None else DaskExecutor(client)
