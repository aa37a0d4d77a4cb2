"""flow.graph.loader: YAML -> Graph with the line of every key, overrides, and FILE:LINE errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from flow.errors import ConfigError, ConfigErrors
from flow.graph.loader import REGISTRY, graph_from_text, load_graph
from flow.graph.model import Graph, Workers
from flow.graph.params import resolve_params
from flow.graph.render import show_config
from tests import steps as test_steps

DATA = Path(__file__).parent / "data"
BROKEN = DATA / "broken"
GOOD = DATA / "good"

# file -> every error it gives, in order: (line, exact message including the hint)
BROKEN_CASES = {
    "unknown_top_key.yaml": [(9, "unknown key 'routr' (did you mean 'router'?)")],
    "unknown_step_key.yaml": [(5, "unknown key 'too' in step 'read' (did you mean 'to'?)")],
    "unknown_router_key.yaml": [
        (11, "unknown key 'max_retry' in 'router' (did you mean 'max_retries'?)")
    ],
    "unknown_target.yaml": [
        (5, "step 'read': unknown target 'calibrate' in 'to' (did you mean 'calibrat'?)")
    ],
    "cycle.yaml": [
        (8, "step 'a': cycle: a -> b -> a (a pipeline must be acyclic; remove one of these edges)")
    ],
    "unreachable.yaml": [
        (
            6,
            "step 'orphan': not reachable from any producer "
            "(add 'orphan' to the 'to' of an upstream step, or remove it)",
        )
    ],
    "consumer_with_to.yaml": [
        (
            9,
            "step 'write': a consumer cannot send events on ('to' given) "
            "(remove 'to', or make it a stager)",
        )
    ],
    "producer_with_input.yaml": [
        (
            8,
            "step 'add': sends to producer 'more', but producers take no inputs "
            "(remove 'more' from 'to', or make 'more' a stager)",
        )
    ],
    "import_module.yaml": [
        (
            5,
            "step 'read': cannot import module 'tests.stepz': no module named "
            "'tests.stepz' (did you mean 'tests.steps'?)",
        )
    ],
    "missing_attribute.yaml": [
        (4, "step 'read': module 'tests.steps' has no attribute 'Countr' (did you mean 'Counter'?)")
    ],
    "unknown_param.yaml": [
        (
            7,
            "step 'read': unknown parameter 'strat' for tests.steps:Counter "
            "(did you mean 'start'? valid: n, start)",
        )
    ],
    "wrong_param_type.yaml": [
        (
            6,
            "step 'read': parameter 'n': expected int, got 'many' "
            "(invalid literal for int() with base 10: 'many') (n is int: number of events)",
        )
    ],
    "missing_required_param.yaml": [
        (
            7,
            "step 'write': missing required parameter 'path' of "
            "tests.steps:ListConsumer (add 'with: {path: ...}': JSON-lines output file)",
        )
    ],
    "duplicate_name.yaml": [
        (
            9,
            "step 'write': duplicate step name "
            "(first defined on line 6; step names must be unique)",
        )
    ],
    "workers_min_gt_max.yaml": [
        (8, "step 'add': workers min (8) is greater than max (2) (use {min: 2, max: 8})")
    ],
    "producer_workers.yaml": [
        (
            5,
            "step 'read': a producer runs as one process; workers must be 1, got 4 "
            "(only stagers are scaled; remove 'workers')",
        )
    ],
    "kind_mismatch.yaml": [
        (
            7,
            "step 'write': kind is 'stager' but tests.steps:ListConsumer is a consumer "
            "(write 'kind: consumer' or leave 'kind' out)",
        )
    ],
    "no_consumer.yaml": [
        (2, "the pipeline has no consumer (add a step of kind 'consumer' that keeps the events)")
    ],
    "bad_indentation.yaml": [
        (
            5,
            "invalid YAML: mapping values are not allowed here "
            "(check the indentation of this line and the one above)",
        )
    ],
    "tab.yaml": [
        (
            4,
            "invalid YAML: found character '\\t' that cannot start any token "
            "(indent with spaces; YAML does not allow tabs)",
        )
    ],
    "unclosed_bracket.yaml": [
        (
            5,
            "invalid YAML: unclosed flow sequence: expected ',' or ']', but got ':' "
            "on line 6 (close it with ']')",
        )
    ],
    "missing_use.yaml": [(6, "step 'add': no 'use' given (add 'use: package.module:Name')")],
    "empty.yaml": [(1, "the file is empty (a pipeline needs at least 'name' and 'steps')")],
    "steps_not_list.yaml": [
        (
            2,
            "'steps' must be a list, got a mapping (write each step as '- name: ...' "
            "under 'steps:')",
        )
    ],
    "several_errors.yaml": [
        (5, "step 'read': unknown parameter 'seed' for tests.steps:Counter (valid: n, start)"),
        (6, "step 'read': unknown target 'ad' in 'to' (did you mean 'add'?)"),
        (9, "step 'add': workers min must be at least 1, got 0"),
        (14, "step 'write': 'pinned' must be true or false, got 'yes please'"),
    ],
}


def errors_of(path, **kwargs) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_graph(path, **kwargs)
    assert all(isinstance(e, ConfigError) for e in info.value.errors)
    return [str(e) for e in info.value.errors]


def test_every_broken_file_has_a_case():
    assert sorted(p.name for p in BROKEN.glob("*.yaml")) == sorted(BROKEN_CASES)


@pytest.mark.parametrize("name", sorted(BROKEN_CASES))
def test_broken_yaml_gives_file_line_message(name):
    path = str(BROKEN / name)
    expected = [f"{path}:{line}: {message}" for line, message in BROKEN_CASES[name]]
    assert errors_of(path) == expected


@pytest.mark.parametrize("name", ["linear.yaml", "branches.yaml", "two_producers.yaml"])
def test_good_files_load(name):
    graph = load_graph(GOOD / name)
    assert isinstance(graph, Graph) and graph.file == str(GOOD / name)
    assert graph.producers and graph.consumers


def test_linear_values_kinds_and_lines():
    graph = load_graph(GOOD / "linear.yaml")
    assert graph.name == "linear" and graph.description == "Counter -> AddOne -> ListConsumer"
    assert graph.names == ("read", "add", "write")
    assert [s.kind for s in graph.steps] == ["producer", "stager", "consumer"]  # inferred
    read, add, write = graph.steps
    assert read.params == (("n", 20),) and read.to == ("add",)
    assert add.workers == Workers(1, 4) and add.param_dict == {"amount": 1}
    assert write.param_dict == {"path": "out/linear.jsonl"} and write.to == ()
    assert graph.router.queue_limit == 100 and graph.router.max_retries == 2
    assert graph.router.heartbeat_s == 1.0  # default kept
    assert add.line == 9 and add.line_of("name") == 9 and add.line_of("use") == 10
    assert add.line_of("workers") == 11 and add.line_of("with.amount") == 13
    assert add.line_of("to") == 14 and add.line_of("no-such-key") == 9
    assert graph.line_of("steps") == 4 and graph.line_of("router.max_retries") == 18
    assert graph.inputs("write") == ("add",)


def test_branches_function_stager_and_declared_kinds():
    graph = load_graph(GOOD / "branches.yaml")
    assert graph["odds"].kind == "stager" and graph["odds"].param_dict == {"amount": 100}
    assert graph["evens"].workers == Workers(2, 2)
    assert graph.inputs("write") == ("evens", "odds")
    assert graph["route"].to == ("evens", "odds")


def test_two_producers_fan_in_and_pinned():
    graph = load_graph(GOOD / "two_producers.yaml")
    assert [s.name for s in graph.producers] == ["low", "high"]
    assert graph.inputs("drop") == ("low", "high")
    assert graph["copy"].pinned is True and graph["all"].pinned is False


def test_set_overrides_parse_yaml_scalars():
    graph = load_graph(
        GOOD / "linear.yaml", overrides=["read.n=5", "add.amount=-3", "read.start=0x10"]
    )
    assert graph["read"].param_dict == {"n": 5, "start": 16}
    assert graph["add"].param_dict == {"amount": -3}
    graph = load_graph(GOOD / "linear.yaml", overrides={"write.path": "x y.jsonl"})
    assert graph["write"].param_dict == {"path": "x y.jsonl"}


def test_workers_overrides():
    graph = load_graph(GOOD / "linear.yaml", workers=["add=2:6"])
    assert graph["add"].workers == Workers(2, 6)
    graph = load_graph(GOOD / "linear.yaml", workers={"add": 3})
    assert graph["add"].workers == Workers(3, 3)


def test_bad_overrides_are_clear_errors():
    path = str(GOOD / "linear.yaml")
    assert errors_of(path, overrides=["ad.amount=2"]) == [
        "--set ad.amount=2: no step named 'ad' (did you mean 'add'?)"
    ]
    assert errors_of(path, overrides=["add.amout=2"]) == [
        "--set add.amout=2: step 'add' has no parameter 'amout' (did you mean 'amount'? valid: amount)"
    ]
    assert errors_of(path, overrides=["add.amount=lots"]) == [
        "--set add.amount=lots: parameter 'amount' of step 'add': expected int, got 'lots' "
        "(invalid literal for int() with base 10: 'lots')"
    ]
    assert errors_of(path, overrides=["amount=2"]) == [
        "--set amount=2: expected STEP.PARAM=VALUE (e.g. --set clean.picture=8)"
    ]
    assert errors_of(path, workers=["add=two"]) == [
        "--workers add=two: expected STEP=N or STEP=MIN:MAX (e.g. --workers calibrate=1:8)"
    ]
    assert errors_of(path, workers=["write=2"]) == [
        f"{path}:15: step 'write': a consumer runs as one process; workers must be 1, got 2 "
        "(only stagers are scaled; remove 'workers')"
    ]
    assert errors_of(path, workers=["add=5:2"]) == [
        f"{path}:11: step 'add': workers min (5) is greater than max (2) (use {{min: 2, max: 5}})"
    ]


STEPS = """\
name: t
steps:
  - name: read
    use: tests.steps:Counter
    to: [write]
  - name: write
    use: {use}
"""


def test_registry_short_names():
    REGISTRY["test-collect"] = "tests.steps:collect"
    REGISTRY["test-list"] = test_steps.ListConsumer
    try:
        graph = graph_from_text(STEPS.format(use="test-list\n    with: {path: x}"), "t.yaml")
        assert graph["write"].kind == "consumer"
        graph = graph_from_text(STEPS.format(use="test-collect\n    kind: consumer"), "t.yaml")
        assert graph["write"].use == "test-collect"
        assert errors_of_text(STEPS.format(use="test-colect")) == [
            "t.yaml:7: step 'write': 'test-colect' is neither 'module:Name' nor a registered short name "
            "(did you mean 'test-collect'?)"
        ]
    finally:
        del REGISTRY["test-collect"], REGISTRY["test-list"]


def errors_of_text(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        graph_from_text(text, "t.yaml")
    return [str(e) for e in info.value.errors]


def test_function_consumer_and_function_params():
    graph = graph_from_text(STEPS.format(use="tests.steps:collect\n    kind: consumer"), "t.yaml")
    assert graph["write"].kind == "consumer"
    text = STEPS.format(use="tests.steps:collect\n    kind: consumer\n    with: {amount: 2}")
    assert errors_of_text(text) == [
        "t.yaml:9: step 'write': unknown parameter 'amount' for tests.steps:collect "
        "(tests.steps:collect takes no parameters)"
    ]


def test_import_failure_inside_module_is_reported(tmp_path, monkeypatch):
    (tmp_path / "flowtest_badmod.py").write_text("import flowtest_not_installed\n")
    (tmp_path / "flowtest_raises.py").write_text("raise RuntimeError('no detector here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert errors_of_text(STEPS.format(use="flowtest_badmod:Writer\n    kind: consumer")) == [
        "t.yaml:7: step 'write': importing module 'flowtest_badmod' failed: "
        "ModuleNotFoundError: No module named 'flowtest_not_installed'"
    ]
    assert errors_of_text(STEPS.format(use="flowtest_raises:Writer\n    kind: consumer")) == [
        "t.yaml:7: step 'write': importing module 'flowtest_raises' failed: RuntimeError: no detector here"
    ]


def test_schema_type_errors():
    text = """\
name: [not, a, string]
steps:
  - just-a-name
  - name: read
    use: tests.steps:Counter
    to: {write: 1}
    with: [n, 5]
    workers: {min: 1, most: 3}
  - name: write
    use: tests.steps:ListConsumer
    with: {path: x, path: y}
router: {queue_limit: many, prefetch: 2.5}
description: 5
"""
    assert errors_of_text(text) == [
        "t.yaml:1: 'name' must be a string, got a list",
        "t.yaml:3: step #1 must be a mapping, got a string "
        "(write '- name: NAME' and 'use: module:Name' on the following lines)",
        "t.yaml:6: 'to' in step 'read' must be a step name or a list of step names, got {'write': 1} "
        "(write 'to: [next_step]')",
        "t.yaml:7: 'with' in step 'read' must be a mapping of parameters, got a list "
        "(write 'with: {name: value}')",
        "t.yaml:8: unknown key 'most' in 'workers' in step 'read' (valid keys: min, max)",
        "t.yaml:11: duplicate parameter 'path' in step 'write' (first given on line 11)",
        "t.yaml:12: router option 'queue_limit' must be int, got 'many'",
        "t.yaml:12: router option 'prefetch' must be int, got 2.5",
        "t.yaml:13: 'description' must be a string",
    ]


def test_top_level_shapes():
    assert errors_of_text("- a\n- b\n") == [
        "t.yaml:1: the top level must be a mapping, got a list "
        "(a pipeline is a mapping with 'name', 'steps' and optionally 'router')"
    ]
    assert errors_of_text("name: x\nname: y\nsteps: []\n") == [
        "t.yaml:2: duplicate key 'name' (first given on line 1)"
    ]
    assert errors_of_text("name: x\nsteps: []\n") == [
        "t.yaml:2: the pipeline has no steps (add steps under 'steps:')"
    ]
    assert errors_of_text("description: d\n") == [
        "t.yaml:1: missing top-level key 'name' (add 'name: t')",
        "t.yaml:1: missing top-level key 'steps' (add 'steps:' with a list of steps)",
    ]
    assert errors_of_text("name: x\nsteps: [a, {b: 1}\n") == [
        "t.yaml:2: invalid YAML: unclosed flow sequence: expected ',' or ']', but got '<stream end>' "
        "on line 3 (close it with ']')"
    ]


def test_unreadable_file(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    assert errors_of(missing) == [f"{missing}: cannot read the file: No such file or directory"]


def test_show_config_output_is_a_pipeline_with_the_same_effective_values():
    graph = load_graph(GOOD / "branches.yaml", overrides=["evens.parts=4"])
    again = graph_from_text(show_config(graph), "shown.yaml")
    assert again.names == graph.names and again.router == graph.router
    for a, b in zip(graph.steps, again.steps, strict=True):
        assert (a.kind, a.use, a.to, a.workers, a.pinned) == (
            b.kind,
            b.use,
            b.to,
            b.workers,
            b.pinned,
        )
        if a.name != "odds":  # a function's parameters have no declared types to resolve
            cls = getattr(test_steps, a.use.partition(":")[2])
            assert resolve_params(cls, a.param_dict) == resolve_params(cls, b.param_dict)
    assert again["evens"].param_dict == {"parts": 4}


def test_yaml_anchors_and_merge_keys_are_not_duplicates():
    text = """\
name: m
steps:
  - &base
    name: read
    use: tests.steps:Counter
    to: [write]
  - <<: *base
    name: read2
    with: {start: 100}
  - name: write
    use: tests.steps:ListConsumer
    with: {path: x}
"""
    graph = graph_from_text(text, "m.yaml")
    assert [s.name for s in graph.producers] == ["read", "read2"]
    assert graph["read2"].line_of("name") == 8 and graph["read2"].line_of("use") == 5
    assert graph.inputs("write") == ("read", "read2")


def test_parameter_bounds_are_checked_with_file_and_line(tmp_path):
    path = tmp_path / "neg.yaml"
    path.write_text("name: neg\nsteps:\n  - name: read\n    use: stages.io.toy:ToyEventSource\n"
                    "    with: {n_events: -5}\n    to: [write]\n"
                    "  - {name: write, use: 'tests.steps:ListConsumer', with: {path: x.jsonl}}\n")
    with pytest.raises(ConfigErrors) as info:
        load_graph(path)
    assert f"{path}:5" in str(info.value) and "must be at least 0, got -5" in str(info.value)
