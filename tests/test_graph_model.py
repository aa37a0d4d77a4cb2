"""flow.graph.model: the graph as a value built from Python, its validation, and its renderers."""

from __future__ import annotations

import inspect

import pytest
import yaml

from flow.errors import ConfigError, ConfigErrors, GraphError
from flow.graph.model import (
    Chain,
    Graph,
    RouterOptions,
    StepSpec,
    Workers,
    check,
    resolve_use,
    step,
    validate,
)
from flow.graph.render import node_label, show_config, to_dot, to_mermaid
from tests.steps import (
    AddOne,
    Counter,
    DropOdd,
    ListConsumer,
    RouteByBranch,
    Split,
    add_one,
    collect,
)

HERE = __file__


def messages(graph: Graph) -> list[str]:
    return [e.message for e in check(graph)]


def here() -> int:
    """The line of the caller (to check that errors point at the script)."""
    return inspect.currentframe().f_back.f_lineno


def test_step_helper_infers_kind_and_normalises():
    s = step("add", AddOne, to="write", workers=(1, 8), amount=2)
    assert (s.kind, s.to, s.workers, s.params) == (
        "stager",
        ("write",),
        Workers(1, 8),
        (("amount", 2),),
    )
    assert step("read", Counter).kind == "producer"
    assert step("write", "tests.steps:ListConsumer", path="x").kind == "consumer"
    assert step("f", add_one).kind == "stager"
    assert step("c", collect, kind="consumer").kind == "consumer"
    assert step("w", ListConsumer, workers=Workers(1, 1)).workers == Workers(1, 1)
    assert step("x", "no.such.module:X").kind == ""  # validation says why


def test_step_helper_records_the_callers_line():
    line = here() + 1
    s = step("add", AddOne)
    assert (s.file, s.line) == (HERE, line)


def test_pipe_shorthand_links_and_validates():
    graph = (
        step("read", Counter, n=3) | step("add", AddOne) | step("write", ListConsumer, path="x")
    ).graph("p")
    assert graph.name == "p" and graph.names == ("read", "add", "write")
    assert [s.to for s in graph.steps] == [("add",), ("write",), ()]
    assert graph.router == RouterOptions()


def test_pipe_shorthand_with_plain_stepspecs_and_chains():
    a = StepSpec("read", "producer", Counter)
    b = StepSpec("drop", "stager", DropOdd)
    c = StepSpec("write", "consumer", ListConsumer, params=(("path", "x"),))
    chain = a | (b | c)
    assert isinstance(chain, Chain) and chain.graph().names == ("read", "drop", "write")


def test_chain_graph_raises_on_invalid_graph():
    with pytest.raises(ConfigErrors) as info:
        (step("add", AddOne) | step("write", ListConsumer, path="x")).graph()
    assert [e.message for e in info.value.errors] == ["the pipeline has no producer"]
    unchecked = (step("add", AddOne) | step("write", ListConsumer, path="x")).graph(check=False)
    assert unchecked.names == ("add", "write")


def test_fan_out_fan_in_and_several_producers():
    graph = Graph(
        "fan",
        (
            step("a", Counter, to=["route"]),
            step("b", Counter, start=100, to="route"),
            step("route", RouteByBranch, even="evens", odd="odds", to=["evens", "odds"]),
            step("evens", Split, parts=3, to=["w1", "w2"], workers=(1, 4)),
            step("odds", add_one, amount=10, to=["w1"]),
            step("w1", ListConsumer, path="1.jsonl"),
            step("w2", ListConsumer, path="2.jsonl"),
        ),
    )
    assert validate(graph) is graph and graph.validate() is graph
    assert graph.inputs("route") == ("a", "b") and graph.inputs("w1") == ("evens", "odds")
    assert [s.name for s in graph.producers] == ["a", "b"]
    assert [s.name for s in graph.consumers] == ["w1", "w2"]


def test_python_graph_errors_carry_the_script_line():
    line = here() + 1
    bad = step("add", AddOne, amout=2, to="write")
    graph = Graph(
        "g", (step("read", Counter, to="add"), bad, step("write", ListConsumer, path="x"))
    )
    with pytest.raises(ConfigErrors) as info:
        validate(graph)
    (error,) = info.value.errors
    assert str(error) == (
        f"{HERE}:{line}: step 'add': unknown parameter 'amout' for tests.steps:AddOne "
        "(did you mean 'amount'? valid: amount)"
    )


def linear(*middle: StepSpec, **writer) -> Graph:
    names = [s.name for s in middle] + ["write"]
    first = step("read", Counter, to=names[0])
    linked = [
        s if s.to else StepSpec(**{**s.__dict__, "to": (nxt,)})
        for s, nxt in zip(middle, names[1:], strict=True)
    ]
    return Graph("g", (first, *linked, step("write", ListConsumer, **({"path": "x"} | writer))))


def test_valid_linear_helper():
    assert check(linear(step("add", AddOne))) == []


@pytest.mark.parametrize(
    "graph, expected",
    [
        (linear(step("add", AddOne, to=["nope"])), ["step 'add': unknown target 'nope' in 'to'"]),
        (
            linear(step("a", AddOne, to="b"), step("b", AddOne, to=["a", "write"])),
            ["step 'a': cycle: a -> b -> a"],
        ),
        (linear(step("a", AddOne, to=["a", "write"])), ["step 'a': cycle: a -> a"]),
        (linear(step("add", AddOne), step("add", DropOdd)), ["step 'add': duplicate step name"]),
        (
            linear(step("add", AddOne, to=["write", "read"])),
            ["step 'add': sends to producer 'read', but producers take no inputs"],
        ),
        (
            linear(step("add", AddOne, workers=(3, 2))),
            ["step 'add': workers min (3) is greater than max (2)"],
        ),
        (
            linear(step("add", AddOne, workers=0)),
            ["step 'add': workers min must be at least 1, got 0"],
        ),
        (
            linear(step("add", AddOne, kind="consumer")),
            ["step 'add': kind is 'consumer' but tests.steps:AddOne is a stager"],
        ),
        (linear(step("add", AddOne, kind="stagger")), ["step 'add': unknown kind 'stagger'"]),
        (
            linear(step("add", AddOne, amount="x")),
            [
                "step 'add': parameter 'amount': expected int, got 'x' (invalid literal for int() with base 10: 'x')"
            ],
        ),
        (
            linear(step("add", add_one, amout=1)),
            ["step 'add': unknown parameter 'amout' for tests.steps:add_one"],
        ),
        (
            Graph("g", (step("read", Counter, to="w"), step("w", ListConsumer))),
            ["step 'w': missing required parameter 'path' of tests.steps:ListConsumer"],
        ),
        (
            linear(step("add", "tests.steps:Nope")),
            ["step 'add': module 'tests.steps' has no attribute 'Nope'"],
        ),
        (
            linear(step("add", "flow_no_such_pkg.mod:X", kind="stager")),
            [
                "step 'add': cannot import module 'flow_no_such_pkg.mod': no module named 'flow_no_such_pkg'"
            ],
        ),
        (
            linear(step("add", 42, kind="stager")),
            ["step 'add': 42 (int) is not a step class or function"],
        ),
        (linear(step("bad.name", AddOne)), ["step 'bad.name': invalid step name 'bad.name'"]),
        (
            Graph(
                "g", (step("read", Counter, to="w"), step("w", ListConsumer, path="x", to="read"))
            ),
            ["step 'w': a consumer cannot send events on ('to' given)"],
        ),
        (
            Graph(
                "g", (step("read", Counter, to="w"), step("w", ListConsumer, path="x", workers=2))
            ),
            ["step 'w': a consumer runs as one process; workers must be 1, got 2"],
        ),
        (
            Graph(
                "g",
                (
                    step("read", Counter, to="w"),
                    step("w", ListConsumer, path="x"),
                    step("lost", AddOne, to="w"),
                ),
            ),
            ["step 'lost': not reachable from any producer"],
        ),
        (
            Graph("g", (step("read", Counter, to="add"), step("add", AddOne))),
            ["the pipeline has no consumer"],
        ),
        (
            Graph(
                "g",
                (step("f", add_one, kind="producer", to="w"), step("w", ListConsumer, path="x")),
            ),
            [
                "step 'f': tests.steps:add_one is a plain function; a producer must be a Producer class"
            ],
        ),
        (Graph("g", ()), ["the pipeline has no steps"]),
        (
            Graph(
                "g",
                (step("read", Counter, to="w"), step("w", ListConsumer, path="x")),
                router=RouterOptions(prefetch=0),
            ),
            ["router option 'prefetch' must be a number >= 1, got 0"],
        ),
    ],
)
def test_validation_problems(graph, expected):
    assert messages(graph) == expected


def test_all_problems_are_reported_together_in_line_order():
    graph = Graph(
        "g",
        (
            step("read", Counter, nn=1, to="add"),
            step("add", AddOne, workers=(4, 1), to=["writ"]),
            step("write", ListConsumer),
        ),
    )
    errors = check(graph)
    assert [e.line for e in errors] == sorted(e.line for e in errors)
    assert [e.message for e in errors] == [
        "step 'read': unknown parameter 'nn' for tests.steps:Counter",
        "step 'add': workers min (4) is greater than max (1)",
        "step 'add': unknown target 'writ' in 'to'",
        "step 'write': missing required parameter 'path' of tests.steps:ListConsumer",
    ]
    assert isinstance(errors[2], GraphError) and errors[2].hint == "did you mean 'write'?"
    with pytest.raises(ConfigErrors) as info:
        validate(graph)
    assert str(info.value).count("\n") == 3


def test_cycle_among_several_is_named_once_from_its_first_step():
    graph = Graph(
        "g",
        (
            step("read", Counter, to="b"),
            step("a", AddOne, to="b"),
            step("b", AddOne, to="c"),
            step("c", AddOne, to=["a", "w"]),
            step("w", ListConsumer, path="x"),
        ),
    )
    assert messages(graph) == ["step 'a': cycle: a -> b -> c -> a"]


def test_resolve_use():
    assert resolve_use("tests.steps:AddOne") is AddOne
    assert resolve_use("tests.steps.AddOne") is AddOne
    assert resolve_use(AddOne) is AddOne
    with pytest.raises(ConfigError, match="neither 'module:Name' nor a registered short name"):
        resolve_use("AddOne")


# ---------------------------------------------------------------------------------------------
# Renderers (flow.graph.render)


def small() -> Graph:
    return Graph(
        "demo",
        (
            step("read", Counter, to="calibrate"),
            step("calibrate", AddOne, workers=(1, 8), to=["clean", "side-out"]),
            step("clean", DropOdd, workers=2, to="write"),
            step("write", ListConsumer, path="x"),
            step("side-out", ListConsumer, path="y"),
        ),
    ).validate()


def test_node_labels_show_workers():
    g = small()
    assert [node_label(s) for s in g.steps] == [
        "read",
        "calibrate ×1–8",
        "clean ×2",
        "write",
        "side-out",
    ]


def test_mermaid():
    assert (
        to_mermaid(small())
        == """\
%% pipeline: demo
flowchart LR
    read(["read"])
    calibrate["calibrate ×1–8"]
    clean["clean ×2"]
    write[("write")]
    side_out[("side-out")]
    read --> calibrate
    calibrate --> clean
    calibrate --> side_out
    clean --> write
"""
    )


def test_dot():
    assert (
        to_dot(small())
        == """\
digraph "demo" {
    rankdir=LR;
    node [fontname="Helvetica"];
    "read" [shape=invhouse, label="read"];
    "calibrate" [shape=box, style=rounded, label="calibrate ×1–8"];
    "clean" [shape=box, style=rounded, label="clean ×2"];
    "write" [shape=cylinder, label="write"];
    "side-out" [shape=cylinder, label="side-out"];
    "read" -> "calibrate";
    "calibrate" -> "clean";
    "calibrate" -> "side-out";
    "clean" -> "write";
}
"""
    )


def test_show_config_lists_every_option_with_type_default_and_help():
    text = show_config(
        Graph(
            "demo",
            (
                step("read", Counter, n=5, to="add"),
                step("add", add_one, amount=3, to="write", workers=(1, 4)),
                step("write", ListConsumer, path="out.jsonl"),
            ),
            router=RouterOptions(queue_limit=7),
        )
    )
    assert "      n: 5      # int, default 10: number of events\n" in text
    assert "      start: 0  # int, default 0: first i\n" in text
    assert "      amount: 3  # int, default 1\n" in text
    assert "      path: out.jsonl  # str, required: JSON-lines output file\n" in text
    assert "    workers: {min: 1, max: 4}  # scaled by the router\n" in text
    assert "  # producer tests.steps:Counter: Yields n events" in text
    assert "queue_limit: 7" in text and "# int, default 1000: events queued per step" in text
    data = yaml.safe_load(text)  # the output is a pipeline file again
    assert data["router"]["queue_limit"] == 7 and len(data["router"]) == len(
        RouterOptions.__dataclass_fields__
    )
    assert data["steps"][1] == {
        "name": "add",
        "kind": "stager",
        "use": "tests.steps:add_one",
        "workers": {"min": 1, "max": 4},
        "pinned": False,
        "fuse": True,
        "with": {"amount": 3},
        "to": ["write"],
    }
