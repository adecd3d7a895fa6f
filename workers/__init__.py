"""Executors: where commands run. Each implements ``orchestrator.core.ports.Executor``
and also offers the ``concurrent.futures.Executor`` face (``submit``, ``map``, ``shutdown``).

    "inline"          InlineExecutor: in the caller's thread (the in-memory twin)
    "asyncio"         AsyncioExecutor: coroutines on a private loop, sync callables in its threads
    "threads://8"     ThreadExecutor: a thread pool in this process
    "processes://4"   ProcessExecutor: a pool of worker processes (commands must pickle)

each built with ``executor_from_url(url)``; and ``FuturesExecutor(pool)``, around any
``concurrent.futures.Executor`` (stdlib pools, loky, dask's ``client.get_executor()``),
which ``as_executor`` builds for a plain pool.
"""

from .aio import AsyncioExecutor
from .factory import as_executor, executor_from_url
from .futures import FuturesExecutor
from .inline import InlineExecutor
from .processes import ProcessExecutor
from .threads import ThreadExecutor

__all__ = [
    "AsyncioExecutor",
    "FuturesExecutor",
    "InlineExecutor",
    "ProcessExecutor",
    "ThreadExecutor",
    "as_executor",
    "executor_from_url",
]
