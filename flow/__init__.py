"""flow: a ZeroMQ flow-based processing engine for Cherenkov-telescope event data.

The public API is what this module re-exports; everything else is private.
"""

from flow.engine.run import RunOptions, run
from flow.errors import (
    ConfigError,
    ConfigErrors,
    DataError,
    FlowError,
    GraphError,
    ProtocolError,
    RunError,
    StepError,
)
from flow.graph.loader import REGISTRY, graph_from_text, load_graph
from flow.graph.model import Graph, RouterOptions, StepSpec, Workers, step, validate
from flow.graph.params import REQUIRED, Param
from flow.graph.step import Consumer, Keyed, Producer, Stager, To
from flow.observe.summary import RunSummary

__version__ = "0.1.0"

__all__ = [
    "REGISTRY", "graph_from_text", "load_graph",
    "ConfigError", "ConfigErrors", "DataError", "FlowError", "GraphError", "ProtocolError",
    "RunError", "StepError",
    "Graph", "RouterOptions", "StepSpec", "Workers", "step", "validate",
    "REQUIRED", "Param", "RunOptions", "run",
    "Consumer", "Keyed", "Producer", "Stager", "To", "RunSummary", "__version__",
]
