"""Commands on Celery workers: ``celery://redis://HOST:PORT/DB``.

``CeleryExecutor`` sends each envelope as one generic task, ``evenflow.run``;
``workers.celery.app`` is what a Celery worker loads (see its docstring for
how to start one). Plain registered callables run there, with no decorator.
"""

from .executor import CeleryExecutor

__all__ = ["CeleryExecutor"]
