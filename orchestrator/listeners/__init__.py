"""Listeners at run time: the host that follows the log for them (in-process or in ``evenflow listen``)."""

from .host import ListenerHost

__all__ = ["ListenerHost"]
