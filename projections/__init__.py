"""Questions the event log answers, as named aggregation pipelines kept as data.

Each module holds one projection: a ``*_pipeline(...)`` builder returning the
pipeline (a plain list, so it can be read, explained and tested) and a query
function on top that runs it on a pymongo or mongomock collection. Only stages
and operators that both MongoDB 6+ and mongomock implement are used.

The hot ones, run status and run history, are materialised into the ``runs``
read model by ``RunsProjector`` as events arrive, and can be rebuilt from the
log at any time (``rebuild_runs``) with the same result.
"""

from .audit import AuditEntry, audit_chain, audit_trail
from .command_stats import CommandStats, command_stats
from .failures import FailureExample, FailureGroup, failures
from .indexes import ensure_indexes
from .read_models import RunsProjector, catch_up, rebuild_runs, stored_status
from .run_history import Page, run_history
from .run_status import RunStatus, run_status
from .throughput import Bucket, throughput
from .worker_activity import WorkerActivity, worker_activity

__all__ = [
    "AuditEntry",
    "Bucket",
    "CommandStats",
    "FailureExample",
    "FailureGroup",
    "Page",
    "RunStatus",
    "RunsProjector",
    "WorkerActivity",
    "audit_chain",
    "audit_trail",
    "catch_up",
    "command_stats",
    "ensure_indexes",
    "failures",
    "rebuild_runs",
    "run_history",
    "run_status",
    "stored_status",
    "throughput",
    "worker_activity",
]
