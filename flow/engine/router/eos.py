"""End of stream: a step is finished when all its inputs have sent EOS and it has nothing queued or
leased; EOS then moves on to its targets. No time-based guessing.

A part of `flow.engine.router.Router` (a mixin: the router's state lives on the one `Router`).
Reads and writes ``finished``, ``closed`` and ``inputs`` of the step states.
"""

from __future__ import annotations

from flow.engine.router.state import StepState
from flow.wire import protocol as P


class EndOfStream:
    """End of stream of the router (see the module docstring)."""

    def finish_step(self, st: StepState) -> None:
        if st.finished:
            return
        st.finished = True
        if st.kind == "producer":
            if not st.workers:
                st.closed = True
        else:
            for w in st.workers.values():
                if w.state not in ("done", "dead"):
                    self._send(w, P.EOS)
                    w.state = "eos"
            if not st.workers:
                st.closed = True
        for t in st.targets:
            self.steps[t].inputs.discard(st.spec.name)
        for m in st.members[1:]:   # the other steps of a fused chain end with it
            m.finished = m.closed = True

    def advance_eos(self) -> None:
        changed = True
        while changed:
            changed = False
            for st in self.steps.values():
                if st.finished or st.kind == "producer" or st.unit is not None:
                    continue
                if not st.inputs and not st.queue and st.leased() == 0:
                    self.finish_step(st)
                    changed = True
