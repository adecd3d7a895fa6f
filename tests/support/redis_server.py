"""A throwaway ``redis-server`` on a free loopback port, for tests that need a real Redis.

``redis_server(tmp)`` starts one (no persistence, in ``tmp``), waits until it
answers PING, and stops and reaps it on exit. The session fixture ``redis_url``
shares one server among every test that asks; it skips, saying why, only when
the ``redis-server`` binary is not installed (``apt-get install redis-server``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from tests.support.polling import wait_until

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Run ``redis-server`` on 127.0.0.1 in ``workdir``; yields its URL (database 0)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server); Celery tests need it")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    command += ["--dir", str(workdir), "--protected-mode", "yes"]
    log = (workdir / "redis.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        wait_until(
            lambda: process.poll() is not None or _answers(client),
            timeout=START_TIMEOUT_S,
            what="redis-server ready",
        )
        if process.poll() is not None:
            raise AssertionError(
                f"redis-server exited with {process.returncode}; see {workdir / 'redis.log'}"
            )
        client.close()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)
        log.close()


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Redis for the whole session; tests keep apart by their own keys and queues."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url
