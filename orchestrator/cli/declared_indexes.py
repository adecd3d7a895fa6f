"""The indexes the code declares, by collection: what ``evenflow doctor`` expects to find on a server.

Read at run time from the modules of ``orchestrator.store`` and from
``projections.indexes``, so an index (or a collection) another module
declares is expected without editing the doctor. The forms read are listed
on ``expected_indexes``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

_TTL_FIELDS = ("expire_after_s", "expire_after_seconds")
"""The field a spec may carry a TTL in (seconds after the time in its key)."""


def expected_indexes() -> dict[str, dict[str, dict[str, Any]]]:
    """Collection -> index name -> ``{"key": [(field, order)...], option: value}``, as declared in code.

    Read from every module of ``orchestrator.store`` and from ``projections.indexes.INDEXES``:
    a module-level name ending in ``INDEXES`` holding index specs (objects with ``name`` and
    ``keys``, plus any ``options`` mapping or a TTL in ``_TTL_FIELDS``; or PyMongo ``IndexModel``s).
    Its collection is, first, a spec's own ``collection``; else the key of a mapping
    ``{collection: specs}``; else, for ``<NAME>_INDEXES``, the value of the module's string
    constant ``<NAME>`` or ``<NAME>S`` (``LEASE_INDEXES`` with ``LEASES = "leases"``), or
    ``<name>`` itself; and the log's, ``events``, for a bare ``INDEXES``.
    """
    import orchestrator.store as store_package
    from projections.indexes import INDEXES as PROJECTION_INDEXES

    found: dict[str, dict[str, dict[str, Any]]] = {}
    modules = [importlib.import_module(f"{store_package.__name__}.{info.name}")
               for info in pkgutil.iter_modules(store_package.__path__)]  # fmt: skip
    for module in modules:
        for attribute, value in sorted(vars(module).items()):
            if attribute.endswith("INDEXES") and attribute.isupper():
                _collect(found, _declared(module, attribute, value))
    _collect(found, _declared(None, "INDEXES", PROJECTION_INDEXES))
    return found


def _declared(module: Any, attribute: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for collection, specs in value.items():
            if isinstance(collection, str) and _is_specs(specs):
                yield from ((getattr(spec, "collection", None) or collection, spec) for spec in specs)
        return
    if not _is_specs(value):
        return
    stem = attribute.removesuffix("INDEXES").rstrip("_")
    named = [getattr(module, name, None) for name in (stem, f"{stem}S")] if stem else []
    collection = next((name for name in named if isinstance(name, str)), stem.lower() or "events")
    yield from ((getattr(spec, "collection", None) or collection, spec) for spec in value)


def _is_specs(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str) and all(_doc(spec) for spec in value)


def _collect(found: dict[str, dict[str, dict[str, Any]]], specs: Iterator[tuple[str, Any]]) -> None:
    """Add each spec under its collection; the first declaration of a name wins (the store's)."""
    for collection, spec in specs:
        declared = _doc(spec)
        if declared is not None:
            found.setdefault(collection, {}).setdefault(*declared)


def _doc(spec: Any) -> tuple[str, dict[str, Any]] | None:
    """An index spec as ``(name, {"key": [...], options...})``, or None for anything else."""
    document = getattr(spec, "document", None)
    if isinstance(document, Mapping) and "key" in document and "name" in document:
        options = {k: v for k, v in document.items() if k not in ("name", "key")}
        return str(document["name"]), {"key": list(dict(document["key"]).items()), **options}
    name, keys = getattr(spec, "name", None), getattr(spec, "keys", None)
    if not isinstance(name, str) or not isinstance(keys, Sequence) or callable(keys):
        return None
    if not all(isinstance(pair, Sequence) and len(pair) == 2 for pair in keys):
        return None
    options = dict(getattr(spec, "options", None) or {})
    ttl = next((getattr(spec, name) for name in _TTL_FIELDS if getattr(spec, name, None) is not None), None)
    if ttl is not None:
        options["expireAfterSeconds"] = ttl
    return name, {"key": [tuple(pair) for pair in keys], **options}
