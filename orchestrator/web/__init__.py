"""The HTTP face of the log: a JSON API (``/api/v1``) and Prometheus metrics (``/metrics``).

Needs the ``ui`` extra (Starlette, uvicorn, prometheus_client); nothing else in
evenflow imports this package, so the base install stays lean.
"""

from __future__ import annotations

from .app import make_app

__all__ = ["make_app"]
