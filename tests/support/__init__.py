"""Servers and processes that tests start for real (Redis, Celery workers), and stop again.

Its modules are also pytest plugins (``pytest_plugins = [...]``) that tests
import helpers from, so pytest rewrites their asserts whichever comes first.
"""

import pytest

pytest.register_assert_rewrite("tests.support.redis_server", "tests.support.celery_worker")
