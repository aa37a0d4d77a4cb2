"""The router, in small parts: `Router` (core.py: the poll loop and the dispatch of commands) with
its duties mixed in from one module each, and the state records they share (state.py).

- lifecycle.py: workers starting (HELLO, CONFIG), BYE and FAILED, liveness, scaling;
- leasing.py: credit to producers, leases to workers, requeue of a lost worker's leases;
- acks.py: PRODUCE and ACK handling, outputs queued downstream, retries and dead letters;
- eos.py: the deterministic end of stream;
- shmrefs.py: the shared-memory segments batches hold, pins and references.

See docs/protocol.md and docs/architecture.md.
"""

from flow.engine.router.core import Router

__all__ = ["Router"]
