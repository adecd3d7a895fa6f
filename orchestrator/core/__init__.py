"""The stdlib-only core: flows, events, the state fold, the planner, policies and ports."""
