"""flow.cli: validate, graph and show-config, run in-process (plus one real `flow` subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flow.cli.app import COMMANDS, EXIT_CODES, EXIT_CONFIG, EXIT_OK, build_parser, main

ROOT = Path(__file__).resolve().parent.parent
GOOD = Path(__file__).parent / "data" / "good"
BROKEN = Path(__file__).parent / "data" / "broken"
LINEAR = str(GOOD / "linear.yaml")


def test_validate_ok(capsys):
    assert main(["validate", LINEAR]) == EXIT_OK
    out, err = capsys.readouterr()
    assert out == f"{LINEAR}: ok (3 steps)\n" and err == ""


def test_validate_prints_every_error_as_file_line_message(capsys):
    path = str(BROKEN / "several_errors.yaml")
    assert main(["validate", path]) == EXIT_CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:5: step 'read': unknown parameter 'seed' for tests.steps:Counter (valid: n, start)",
        f"{path}:6: step 'read': unknown target 'ad' in 'to' (did you mean 'add'?)",
        f"{path}:9: step 'add': workers min must be at least 1, got 0",
        f"{path}:14: step 'write': 'pinned' must be true or false, got 'yes please'",
    ]


def test_validate_malformed_yaml_and_missing_file(capsys, tmp_path):
    path = str(BROKEN / "tab.yaml")
    assert main(["validate", path]) == EXIT_CONFIG
    assert capsys.readouterr().err.startswith(f"{path}:4: invalid YAML: found character '\\t'")
    missing = str(tmp_path / "nope.yaml")
    assert main(["validate", missing]) == EXIT_CONFIG
    assert (
        capsys.readouterr().err == f"{missing}: cannot read the file: No such file or directory\n"
    )


def test_validate_with_overrides(capsys):
    assert main(["validate", LINEAR, "--set", "add.amount=5", "--workers", "add=2:3"]) == EXIT_OK
    capsys.readouterr()
    assert main(["validate", LINEAR, "--set", "add.amout=5", "--workers", "ad=2"]) == EXIT_CONFIG
    assert capsys.readouterr().err.splitlines() == [
        "--set add.amout=5: step 'add' has no parameter 'amout' (did you mean 'amount'? valid: amount)",
        "--workers ad=2: no step named 'ad' (did you mean 'add'?)",
    ]


@pytest.mark.parametrize(
    "fmt, first", [("mermaid", "%% pipeline: linear"), ("dot", 'digraph "linear" {')]
)
def test_graph_formats(capsys, fmt, first):
    assert main(["graph", LINEAR, "--format", fmt, "--workers", "add=1:8"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines()[0] == first and "add ×1–8" in out


def test_graph_default_is_mermaid_and_output_file(capsys, tmp_path):
    target = tmp_path / "g.mmd"
    assert main(["graph", LINEAR, "-o", str(target)]) == EXIT_OK
    assert capsys.readouterr().out == ""
    assert target.read_text().splitlines()[1] == "flowchart LR"


def test_graph_of_invalid_file_is_a_config_error(capsys):
    assert main(["graph", str(BROKEN / "cycle.yaml")]) == EXIT_CONFIG
    assert "cycle: a -> b -> a" in capsys.readouterr().err


def test_show_config_with_set(capsys):
    assert main(["show-config", LINEAR, "--set", "read.n=7"]) == EXIT_OK
    out = capsys.readouterr().out
    data = yaml.safe_load(out)
    assert data["steps"][0]["with"] == {"n": 7, "start": 0}
    assert data["router"]["queue_limit"] == 100
    assert "n: 7" in out and "# int, default 10: number of events" in out


def test_help_lists_subcommands_examples_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command.name in out and command.example in out
    for code, meaning in EXIT_CODES.items():
        assert f"{code:>3}  {meaning}" in out
    assert set(EXIT_CODES) == {0, 1, 2, 3, 130}


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["graph", LINEAR, "--format", "png"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main([])
    capsys.readouterr()


def test_build_parser_takes_extra_commands():
    from flow.cli.app import Command

    seen = []
    extra = Command(
        "hello",
        "say hello",
        "flow hello NAME",
        lambda p: p.add_argument("who"),
        lambda a: seen.append(a.who) or 0,
    )
    args = build_parser([*COMMANDS, extra]).parse_args(["hello", "you"])
    assert args.func(args) == 0 and seen == ["you"]


def test_flow_console_script_validates_a_good_file():
    flow = Path(sys.executable).with_name("flow")
    if not flow.exists():
        pytest.skip("the flow console script is not installed next to this python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [str(flow), "validate", "tests/data/good/branches.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        "tests/data/good/branches.yaml: ok (5 steps)\n",
        "",
    )
    proc = subprocess.run(
        [str(flow), "validate", "tests/data/broken/cycle.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("tests/data/broken/cycle.yaml:8: step 'a': cycle: a -> b -> a")
