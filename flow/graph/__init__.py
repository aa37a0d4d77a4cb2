"""The pipeline as a value: frozen step specs and graphs, YAML loading with the line of every key,
validation, declared parameters, the step API and rendering (Mermaid, DOT, commented YAML).

Imports: `flow.errors` only. Nothing here opens a socket or starts a process, so a graph can be
built, checked and drawn anywhere.
"""

from flow.graph.model import Graph, RouterOptions, StepSpec, Workers, step, validate
from flow.graph.params import REQUIRED, Param
from flow.graph.step import Consumer, Keyed, Producer, Stager, To

__all__ = ["Graph", "RouterOptions", "StepSpec", "Workers", "step", "validate", "REQUIRED", "Param",
           "Consumer", "Keyed", "Producer", "Stager", "To"]
