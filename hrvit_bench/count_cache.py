"""Counts each (model, input) once per process, in parallel when asked: claims, published numbers, reports and
latency share them.

A count depends only on the architecture, the input shape and the engine, so it is safe to keep for the life of
the process.
"""
from __future__ import annotations

import functools
import multiprocessing
import os
import signal

import torch

from . import counting, zoo
from .counting import MacCount

_PROCESS_COUNTS: dict[tuple[str, str, tuple[int, int]], MacCount] = {}


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class CountCache:
    def __init__(self, engine: str = "meta", store: dict | None = None):
        self.engine = engine
        self._counts = _PROCESS_COUNTS if store is None else store

    def get(self, name: str, size: tuple[int, int]) -> MacCount:
        key = (self.engine, name, tuple(size))
        if key not in self._counts:
            self._counts[key] = _count(key)
        return self._counts[key]

    def prefetch(self, wanted, jobs: int = 1, progress=None) -> None:
        """Count every (name, size) in ``wanted`` not yet known, in ``jobs`` forked processes when above 1.

        Counting is single-threaded Python work on meta tensors, so two cores count twice as fast."""
        todo = sorted({(self.engine, name, tuple(size)) for name, size in wanted} - set(self._counts))
        if not todo:
            return
        self.get(*todo[0][1:])  # warm torch's lazily built meta kernels once, before any fork
        todo = todo[1:]
        if jobs > 1 and len(todo) > 1 and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(jobs, initializer=_worker_setup) as pool:
                try:
                    for key, count in pool.imap_unordered(_count_with_key, todo, chunksize=2):
                        self._counts[key] = count
                        if progress:
                            progress(_label(key))
                except KeyboardInterrupt:  # Ctrl-C: stop the workers before the CLI says "interrupted"
                    pool.terminate()
                    pool.join()
                    raise
        else:
            for key in todo:
                if progress:
                    progress(_label(key))
                self._counts[key] = _count(key)


def _worker_setup() -> None:
    """A worker counts on one thread and ignores SIGINT: Ctrl-C reaches the whole process group, and only the
    parent should answer it (else each worker prints its own KeyboardInterrupt traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def _label(key) -> str:
    return f"{key[1]} @ {zoo.format_size(key[2])}"


@functools.lru_cache(maxsize=1)
def _built(name: str, device: str):
    """The last model built: a model's inputs are counted one after another, on one build."""
    return zoo.build(name, device)


def _count(key: tuple[str, str, tuple[int, int]]) -> MacCount:
    engine, name, size = key
    model = _built(name, "meta" if engine == "meta" else "cpu")
    return counting.count(model, zoo.input_shape(zoo.info(name), size), engine=engine, name=name,
                          real_copy=lambda: zoo.build(name, "cpu"))


def _count_with_key(key):
    return key, _count(key)
