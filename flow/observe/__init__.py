"""What watches a run: the statistics records (stats.py), their publisher (PUB socket, JSON lines),
the monitor client (the GUI's only door into a run), the terminal view, the Prometheus exporter,
`flow report`'s plots and the run summary.

Imports: `flow.errors` and `flow.wire` (to decode and authenticate what it reads); never
`flow.engine` or `flow.cli`. It reads records; it never drives a run.
"""
