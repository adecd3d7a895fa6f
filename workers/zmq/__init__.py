"""Remote workers over ZeroMQ, with no broker: the service binds, workers and clients connect.

    ZmqExecutor   the service end, an executor the engine dispatches to (``zmq://HOST:PORT``)
    Worker        a worker host: runs the commands of its own registry, nothing else
    ServerKeys / ClientKeys, make_keypair   CURVE authentication and encryption
                  (from ``orchestrator.transport.security``, here for worker hosts)

The socket, its messages and the decisions about which worker gets which call
are the transport's (``orchestrator.transport``); this package is the executor
on top of it and the worker process.
"""

from orchestrator.transport.security import ClientKeys, ServerKeys, make_keypair

from .executor import ZmqExecutor
from .worker import Worker

__all__ = ["ClientKeys", "ServerKeys", "Worker", "ZmqExecutor", "make_keypair"]
