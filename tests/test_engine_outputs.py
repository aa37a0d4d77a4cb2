"""flow.engine.outputs: keys of outputs, explicit routing, producer keys, paths."""

from __future__ import annotations

import pytest

from flow.engine.outputs import ALL, path_after, producer_outputs, stager_outputs
from flow.errors import StepError
from flow.graph.step import Keyed, To


def test_single_output_keeps_the_key_and_many_get_suffixes():
    assert stager_outputs({"a": 1}, "k", "s", ("t",)) == [("k", ALL, {"a": 1})]
    assert stager_outputs(None, "k", "s", ("t",)) == []
    outs = stager_outputs([1, None, 2], "k", "s", ("t",))
    assert outs == [("k/0", ALL, 1), ("k/1", ALL, 2)]
    gen = stager_outputs((x for x in "ab"), "k", "s", ("t",))
    assert [o[0] for o in gen] == ["k/0", "k/1"]


def test_explicit_routing_must_name_a_target():
    assert stager_outputs(To("b", 1), "k", "s", ("a", "b")) == [("k", "b", 1)]
    with pytest.raises(StepError, match="routed an event to 'c'.*not one of its targets"):
        stager_outputs(To("c", 1), "k", "s", ("a", "b"))


def test_producer_keys_and_paths():
    outs = list(producer_outputs([Keyed("1:7", "x"), "y", None, "z"], "read", ("t",)))
    assert outs == [("1:7", ALL, "x"), ("read:1", ALL, "y"), ("read:2", ALL, "z")]
    assert path_after("", 0) == "0" and path_after("0.2", 3) == "0.2.3"
