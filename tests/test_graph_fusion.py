"""flow/graph/fusion.py: which steps fuse, alone (no processes), and how the graph shows it."""

from __future__ import annotations

import pytest

from flow.errors import ConfigErrors
from flow.graph.fusion import Chain, chain_pinned, chain_workers, groups, link_break, plan
from flow.graph.loader import graph_from_text, load_graph
from flow.graph.model import Workers
from flow.graph.render import show_config, to_dot, to_mermaid

HEAD = """
name: g
steps:
  - {name: read, use: "tests.steps:Counter", to: [a]}
"""


def graph(body: str, router: str = ""):
    text = HEAD + body + (f"router: {router}\n" if router else "")
    return graph_from_text(text, "g.yaml")


LINEAR = """
  - {name: a, use: "tests.steps:AddOne", workers: {min: 1, max: 4}, to: [b]}
  - {name: b, use: "tests.steps:AddOne", to: [c]}
  - {name: c, use: "tests.steps:AddOne", workers: 2, to: [write]}
  - {name: write, use: "tests.steps:ListConsumer", with: {path: out.jsonl}}
"""


def test_linear_stagers_fuse_into_one_chain_between_producer_and_consumer():
    g = graph(LINEAR)
    assert plan(g) == (Chain(("a", "b", "c")),)
    assert groups(g) == {"a": "a", "b": "a", "c": "a"}
    assert link_break(g, g["c"]) == "'write' is not a stager"
    assert link_break(g, g["read"]) == "'read' is a producer"
    # it starts with what its most demanding step asks for, scales as far as the most scalable
    assert chain_workers(g, plan(g)[0]) == Workers(2, 4)


def test_fuse_false_on_a_step_or_for_the_graph_splits_chains():
    g = graph(LINEAR.replace('{name: b, use', '{name: b, fuse: false, use'))
    assert plan(g) == ()            # a | b | c: b alone leaves a and c without a neighbour
    assert link_break(g, g["a"]) == "'b' has fuse: false"
    four = LINEAR.replace("to: [write]}", "to: [d]}") + \
        '  - {name: d, use: "tests.steps:AddOne", to: [write]}\n'
    g = graph(four.replace('{name: b, use', '{name: b, fuse: false, use'))
    assert plan(g) == (Chain(("c", "d")),)
    g = graph(LINEAR, "{fuse: false}")
    assert plan(g) == () and "fusion is off" in link_break(g, g["a"])


def test_fan_out_and_fan_in_end_a_chain():
    g = graph("""
  - {name: a, use: "tests.steps:AddOne", to: [b]}
  - {name: b, use: "tests.steps:RouteByBranch", to: [even, odd]}
  - {name: even, use: "tests.steps:AddOne", to: [m]}
  - {name: odd, use: "tests.steps:AddOne", to: [m]}
  - {name: m, use: "tests.steps:AddOne", to: [n]}
  - {name: n, use: "tests.steps:AddOne", to: [write]}
  - {name: write, use: "tests.steps:ListConsumer", with: {path: out.jsonl}}
""")
    # a -> b fuses (b may route to even or odd: they are the chain's targets, outside it);
    # b fans out; m has two inputs, so the chain restarts there
    assert plan(g) == (Chain(("a", "b")), Chain(("m", "n")))
    assert link_break(g, g["b"]) == "'b' fans out to 2 steps"
    assert link_break(g, g["even"]) == "'m' has 2 inputs"


def test_a_pinned_step_pins_its_chain():
    g = graph(LINEAR.replace('{name: b, use', '{name: b, pinned: true, use'))
    assert chain_pinned(g, plan(g)[0])


def test_fuse_must_be_a_bool_with_its_line():
    with pytest.raises(ConfigErrors) as info:
        graph(LINEAR.replace('{name: b, use', '{name: b, fuse: maybe, use'))
    assert "g.yaml:7" in str(info.value) and "'fuse' must be true or false" in str(info.value)
    with pytest.raises(ConfigErrors) as info:
        graph(LINEAR, "{fuse: 1}")
    assert "router option 'fuse' must be bool" in str(info.value)
    with pytest.raises(ConfigErrors) as info:
        graph(LINEAR, "{start_method: fork}")
    assert "start_method' must be zygote or spawn" in str(info.value)


def test_mermaid_draws_a_chain_as_a_subgraph_and_dot_as_a_cluster():
    g = graph(LINEAR)
    text = to_mermaid(g)
    assert 'subgraph fused_a["fused ×2–4"]' in text
    inside = text.split("subgraph")[1].split("end")[0]
    assert all(f'{n}["{n} ' in inside for n in "abc") and "write" not in inside
    assert "a --> b" in text and "c --> write" in text
    assert 'subgraph "cluster_a"' in to_dot(g)


def test_show_config_says_which_steps_fuse_and_stays_a_valid_pipeline(tmp_path):
    g = graph(LINEAR.replace('{name: c, use', '{name: c, fuse: false, use'))
    text = show_config(g)
    assert "# fused: a → b (one worker process, fused ×1–4)" in text
    assert "# not fused after 'b': 'c' has fuse: false" in text
    assert "fuse: false" in text
    (tmp_path / "again.yaml").write_text(text)
    again = load_graph(tmp_path / "again.yaml")
    assert plan(again) == plan(g) and again["c"].fuse is False


def test_the_shipped_pipelines_fuse_their_whole_chain():
    g = load_graph("configs/simtel_dl2.yaml")
    assert plan(g) == (Chain(("parse", "calibrate", "clean", "parameters", "quality",
                              "reconstruct")),)
    g = load_graph("configs/demo.yaml")
    assert plan(g)[0].steps[0] == "render" and plan(g)[0].steps[-1] == "gammaness"
