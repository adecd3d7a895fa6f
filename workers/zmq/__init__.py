"""Remote workers over ZeroMQ, with no broker: the service binds, workers and clients connect.

    ZmqExecutor   the service end, an executor the engine dispatches to (``zmq://HOST:PORT``)
    Worker        a worker host: runs the commands of its own registry, nothing else
    ServerKeys / ClientKeys, make_keypair   CURVE authentication and encryption

pyzmq is imported here and nowhere else in evenflow.
"""

from .executor import ZmqExecutor
from .security import ClientKeys, ServerKeys, make_keypair
from .worker import Worker

__all__ = ["ClientKeys", "ServerKeys", "Worker", "ZmqExecutor", "make_keypair"]
