"""Run a function over a dataset's cases, in worker processes when that pays."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from volseg.data.adapters.base import Case

# Serial seconds the cases left after the first must promise before worker processes are
# started for them: starting them costs seconds (5-10 on a 2-core machine, where the fork
# server imports torch and Lightning), and two workers at best halve the rest.
POOL_MIN_SECONDS = 30.0

T = TypeVar("T")

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Cache-building processes when ``data.cache_workers`` is null: min(4, usable CPU cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(4, cores or 1)


def map_cases(
    function: Callable[[Case], T], cases: Sequence[Case], workers: int | None = None,
    description: str = "", show_progress: bool = True,
    pool_min_seconds: float | None = None,
) -> list[tuple[Case, T]]:
    """``[(case, function(case))]`` in the order of ``cases``, in worker processes when it pays.

    Worker processes take seconds to start (a fork server imports torch for them), so the
    first case runs in this process and is timed; workers start only when the remaining cases
    would take longer than ``pool_min_seconds`` here. They start with forkserver (spawn where
    there is none), never fork: a forked copy of a process that already runs torch threads can
    deadlock. Each worker uses one torch thread; the workers are the parallelism. ``function``
    and the cases must pickle (a module-level function, a `functools.partial`, a bound method
    of a picklable object), and a script that builds a cache needs the
    ``if __name__ == "__main__":`` guard. A Rich progress bar shows the cases done of the total.

    Args:
        workers: processes at most; ``None`` for `default_workers`, 0 or 1 for this process.
        description: the progress bar's label.
        pool_min_seconds: see above; ``None`` for `POOL_MIN_SECONDS`, 0 to always use workers.

    Raises:
        RuntimeError: ``function`` raised for a case; the message names the case and its first
            file, and the remaining cases are cancelled.
    """
    workers = default_workers() if workers is None else workers
    pool_min_seconds = POOL_MIN_SECONDS if pool_min_seconds is None else pool_min_seconds
    results: list[tuple[Case, T]] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, transient=True, disable=not show_progress or not cases) as progress:
        task = progress.add_task(description, total=len(cases))

        def done(case: Case, result: T) -> None:
            results.append((case, result))
            progress.advance(task)

        def here(case: Case) -> None:
            try:
                result = function(case)
            except Exception as error:
                raise _case_error(case, error) from error
            done(case, result)

        remaining = list(cases)
        if workers > 1 and len(remaining) > 1:
            start = time.perf_counter()
            here(remaining.pop(0))
            if (time.perf_counter() - start) * len(remaining) >= pool_min_seconds:
                remaining = _map_in_pool(function, remaining, workers, done)
        for case in remaining:
            here(case)
    position = {case.case_id: i for i, case in enumerate(cases)}
    return sorted(results, key=lambda item: position[item[0].case_id])


def _map_in_pool(
    function: Callable[[Case], T], cases: Sequence[Case], workers: int,
    done: Callable[[Case, T], None],
) -> list[Case]:
    """Run `map_cases` in worker processes; return the cases left undone if the pool broke."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # Import the function's module (torch, ...) once in the fork server, not in every
        # worker. This sets the process-wide preload list and takes effect only if the server
        # has not started yet; "__main__" is the default entry.
        module = getattr(getattr(function, "func", function), "__module__", None)
        context.set_forkserver_preload(["__main__", *([module] if module else [])])
    else:
        context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(min(workers, len(cases)), mp_context=context,
                               initializer=_init_worker)
    finished: set[str] = set()
    try:
        futures: dict[Future, Case] = {pool.submit(function, c): c for c in cases}
        for future in as_completed(futures):
            case = futures[future]
            try:
                result = future.result()
            except BrokenProcessPool:
                # A worker died: killed for memory, or the main script lacks the
                # `if __name__ == "__main__":` guard that spawned workers need. In this process
                # the rest still gets done.
                log.warning("cache worker processes died; building the remaining cases in "
                            "this process (data.cache_workers=0 skips the workers)")
                return [c for c in cases if c.case_id not in finished]
            except Exception as error:
                raise _case_error(case, error) from error
            done(case, result)
            finished.add(case.case_id)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return []


def _case_error(case: Case, error: Exception) -> RuntimeError:
    """An unexpected error while handling ``case``, re-raised naming the case and its file."""
    return RuntimeError(
        f"case {case.case_id} ({case.image_paths[0]}): {type(error).__name__}: {error}"
    )


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
