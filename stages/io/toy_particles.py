"""Toy runs of one particle type (gamma, proton or electron), as IRF productions are made.

`ToyParticleSource` is `stages.io.toy.ToyEventSource` with every shower of one ``particle``:
gammas from the pointing direction (point-like), protons diffuse within 3 deg. Toy electrons are the
diffuse, wide showers of the toy protons labelled with the electron primary id (1): enough for a
background the IRF tools weight with an electron spectrum, not a model of electron showers.
"""

from __future__ import annotations

from flow.graph.params import Param

from .toy import ToyEventSource
from .toy_simconfig import PRIMARY_IDS


class ToyParticleSource(ToyEventSource):
    """Toy events of one particle type (see module docstring)."""

    particle = Param(str, "gamma", "primary particle of every shower",
                     choices=tuple(PRIMARY_IDS))

    def _fraction(self) -> float:
        return 1.0 if self.particle == "gamma" else 0.0

    def publish_context(self) -> dict:
        self.gamma_fraction = self._fraction()
        return super().publish_context()

    def make_event(self, index: int) -> dict:
        self.gamma_fraction = self._fraction()
        event = super().make_event(index)
        event["simulation"]["shower_primary_id"] = PRIMARY_IDS[self.particle]
        return event
