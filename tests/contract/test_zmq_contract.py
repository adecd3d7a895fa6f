"""The executor contract for ``zmq://``: a real worker process on 127.0.0.1 runs every command.

A name no worker has is not sent anywhere: it waits out the schedule timeout
and fails as ``UnknownCommand``, so the contract's unknown-command case holds
with nothing executed, after a 1 s schedule timeout. The tests that kill a worker
process get a generous one instead. Nothing restarts that worker (its commands run
on threads in it, so ``die_once`` ends it): the calls it never began must have
been given to it before the one that kills it, and on the service they wait by
command, so the fan-out's all go first. Each begins only after the service's
``go`` for its ``started`` report; before, a busy machine could leave the report
of the killer (and the outcomes sent just before it) in the dying process, and
the service waited out the schedule timeout for another worker to run it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.commands import make_registry
from tests.contract.executor_suite import ExecutorContract, MakeExecutor
from tests.support.zmq_cluster import wait_for_workers, worker
from workers.base import BaseExecutor
from workers.zmq import ZmqExecutor

pytestmark = pytest.mark.slow


class TestZmqExecutor(ExecutorContract):
    @pytest.fixture
    def kind(self) -> str:
        return "zmq"

    @pytest.fixture
    def make_executor(self, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MakeExecutor]:
        """Each executor binds a fresh port and gets its own worker process (two slots)."""
        patience = 60.0 if "killed" in request.node.name else 1.0
        with ExitStack() as stack:

            def make() -> BaseExecutor:
                executor = ZmqExecutor(
                    "tcp://127.0.0.1:0",
                    registry=make_registry(),
                    heartbeat_s=0.2,
                    schedule_timeout_s=patience,
                )
                stack.callback(executor.close)
                confirm = ("--confirm-starts",)  # the contract's exactness: a kill loses what ran alone
                stack.enter_context(worker(executor.endpoint, tmp_path, concurrency=2, extra=confirm))
                executor.hub.start()
                wait_for_workers(executor, 1)
                return executor

            yield make
