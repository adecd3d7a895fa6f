"""No import cycle between any two modules of ours, counting imports inside functions.

grimp (import-linter's graph) records every ``import``, at module level or in
a function body. Two cycles lived here once: ``projections.documents`` and
``projections.memory_runs``, and the ``orchestrator.cli`` package and
``cli/control.py`` (both now import ``cli/termination.py`` instead); a third,
``workers.factory`` and the zmq worker, went when the worker built its own pool.
"""

from __future__ import annotations

import grimp

ROOTS = ("orchestrator", "workers", "projections")


def cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """The graph's strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            module, imported = work[-1]
            step = next(imported, None)
            if step is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    component = set(stack[stack.index(module) :])
                    del stack[stack.index(module) :]
                    if len(component) > 1:
                        found.append(component)
            elif step not in index:
                index[step] = low[step] = len(index)
                stack.append(step)
                work.append((step, iter(sorted(graph.find_modules_directly_imported_by(step)))))
            elif step in stack:
                low[module] = min(low[module], index[step])
    return found


def test_cycles_finds_a_cycle_and_only_the_cycle() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e")]:
        graph.add_import(importer=importer, imported=imported)
    assert cycles(graph) == [{"a", "b", "c"}]


def test_no_import_cycle_between_any_of_our_modules() -> None:
    graph = grimp.build_graph(*ROOTS, cache_dir=None)
    assert cycles(graph) == []
