"""What crosses a socket: the protocol's frames (protocol.py, docs/protocol.md), the codec of
payloads (codec.py, docs/codec.md), shared-memory segments for large arrays (shm.py) and the
ledger of who still needs each one (ledger.py), and CURVE security (security.py).

Imports: `flow.errors` only; never `flow.graph`, `flow.engine`, `flow.observe` or `flow.cli`.
"""
