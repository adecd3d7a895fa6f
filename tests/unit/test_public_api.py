"""The public surface is deliberate: this list changes only on purpose."""

from __future__ import annotations

import orchestrator

EXPECTED = {
    "Call", "CallContext", "CascadeLimit", "Chord", "Client", "CommandError", "CommandTimeout",
    "ConcurrencyConflict", "ConfigurationError", "CorruptEvent", "Each", "EvenflowError", "Event", "Failure",
    "IdempotencyConflict", "InvalidEvent", "InvalidFlow", "InvalidOption", "InvalidRunState", "Listener",
    "ListenerError", "Node", "NoWorker", "Orchestrator", "Parallel", "PayloadError", "ProtocolError",
    "Registry", "RemoteError", "ResultTimeout", "RetryPolicy", "Run", "RunCancelled", "RunFailed",
    "RunNotFound", "RunParked", "Sequence", "StoreLocked", "StoreUnavailable", "UnknownCommand", "WorkerLost",
    "call", "chord", "cmd", "current_call", "each", "emit", "encode_flow", "on", "parallel", "sequence",
}  # fmt: skip


def test_exported_names_are_pinned() -> None:
    assert set(orchestrator.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(orchestrator, name) is not None


def test_every_error_shares_one_root() -> None:
    errors = [getattr(orchestrator, n) for n in EXPECTED if n.endswith(("Error", "Failed", "Timeout"))]
    for kind in errors:
        assert issubclass(kind, orchestrator.EvenflowError), kind


def test_importing_the_package_pulls_in_no_optional_technology() -> None:
    import subprocess
    import sys

    code = "import sys, orchestrator; print([m for m in ('pymongo', 'zmq', 'mongomock') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
