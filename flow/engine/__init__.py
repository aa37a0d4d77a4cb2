"""What runs the processes: the router (router.py and its parts) and its state records, how a
step's return value becomes outputs (outputs.py), the worker, the launcher and agent that start
workers, the scaling policy (scale_policy.py, a pure function) and the driver that applies it
(scale_driver.py), dead letters, the one-process run (inline.py), replay, and `run` that puts a
run together.

Imports: `flow.errors`, `flow.graph`, `flow.wire`, and the records of `flow.observe` (statistics,
summary, publisher and views that `run` drives); never `flow.cli`.
"""
