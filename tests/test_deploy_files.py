"""The deployment files (docker/, Slurm) checked without a Docker engine or a Slurm cluster.

compose.yaml is parsed and its commands are parsed by the real `flow` CLI; the Dockerfile's
instructions are checked against the repository; the shell scripts pass ``bash -n`` and are run
with stand-ins for ``flow``, ``srun`` and ``scontrol`` that record what they are asked to do.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
SBATCH = DOCKER / "slurm" / "flow.sbatch"
ENTRYPOINT = DOCKER / "entrypoint.sh"
CLI_SUBCOMMANDS = {"run", "agent", "keys"}     # what the deployment files may call


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def flow_parser() -> tuple[argparse.ArgumentParser, set[str]]:
    from flow.cli.app import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, set(sub.choices)


# --- compose ------------------------------------------------------------------------------------

def test_compose_services_and_commands(compose):
    services = compose["services"]
    assert {"keys", "router", "agent"} <= set(services)
    assert services["router"]["command"] == [
        "flow", "run", "/app/configs/demo.yaml", "--bind", "tcp://0.0.0.0:5555", "--keys", "/keys"]
    assert services["agent"]["command"] == [
        "flow", "agent", "--connect", "tcp://router:5555", "--cpus", "2", "--keys", "/keys"]
    assert services["keys"]["command"] == ["flow", "keys", "generate", "/keys"]
    for name, service in services.items():
        command = service["command"]
        assert command[0] == "flow" and command[1] in CLI_SUBCOMMANDS, name


def test_compose_agent_is_scalable(compose):
    agent = compose["services"]["agent"]
    assert "container_name" not in agent               # `--scale agent=N` needs unique names
    assert "ports" not in agent                        # and no fixed host port
    # agents reach the router by its service name, on the port the router binds
    connect = agent["command"][agent["command"].index("--connect") + 1]
    bind = compose["services"]["router"]["command"]
    port = bind[bind.index("--bind") + 1].rsplit(":", 1)[1]
    assert connect == f"tcp://router:{port}"
    assert agent["deploy"]["resources"]["limits"]["cpus"] == \
        agent["command"][agent["command"].index("--cpus") + 1]


def test_compose_keys_volume(compose):
    assert "keys" in compose["volumes"]
    services = compose["services"]
    assert "keys:/keys" in services["keys"]["volumes"]        # the init service writes them
    for name in ("router", "agent"):
        assert "keys:/keys:ro" in services[name]["volumes"], name   # the others only read
        assert services[name]["depends_on"]["keys"]["condition"] == \
            "service_completed_successfully"
        command = services[name]["command"]
        assert command[command.index("--keys") + 1] == "/keys"


def test_compose_builds_the_dockerfile(compose):
    for name, service in compose["services"].items():
        build = service["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"


def test_compose_config_files_exist_in_the_image_and_the_repo(compose):
    paths = [arg for s in compose["services"].values() for arg in s["command"]
             if arg.startswith("/app/configs/")]
    assert paths == ["/app/configs/demo.yaml"]
    assert "COPY configs ./configs" in (DOCKER / "Dockerfile").read_text()   # /app is WORKDIR
    missing = [p for p in paths if not (ROOT / p.removeprefix("/app/")).is_file()]
    if missing:
        pytest.skip(f"{missing} not in the repository yet (configs/ is written by another change)")


def cli_commands() -> list[tuple[str, list[str]]]:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    return [(f"compose:{name}", s["command"][1:]) for name, s in services.items()]


@pytest.mark.parametrize("where, argv", cli_commands(), ids=[w for w, _ in cli_commands()])
def test_commands_parse_with_the_real_cli(where, argv):
    parser, known = flow_parser()
    if argv[0] not in known:
        pytest.skip(f"`flow {argv[0]}` is not registered in flow.cli yet")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{where}: `flow {' '.join(argv)}` does not parse (exit {e.code})")
    assert args.command == argv[0]


# --- Dockerfile ---------------------------------------------------------------------------------

def dockerfile() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_dockerfile_base_install_and_copies():
    instructions = dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert len([1 for op, _ in instructions if op == "FROM"]) == 1
    runs = [arg for op, arg in instructions if op == "RUN"]
    pip = [r for r in runs if "pip install" in r]
    assert pip == ['pip install ".[ctapipe]"']               # the ctapipe extra, not the GUI one
    copies = [arg.split() for op, arg in instructions if op == "COPY"]
    sources = [src for c in copies for src in c[:-1]]
    for src in sources:
        if "[" in src:                                        # optional wildcard (README.m[d])
            continue
        assert (ROOT / src).exists(), src
    assert {"setup.cfg", "pyproject.toml", "flow", "stages", "configs",
            "docker/entrypoint.sh"} <= set(sources)
    # the package sources are installed before configs are copied (configs change more often)
    order = [c[0] for c in copies]
    assert order.index("flow") < order.index("configs")
    assert any(op == "RUN" and "pip install" in arg for op, arg in instructions[:[
        i for i, (op, arg) in enumerate(instructions) if op == "COPY" and arg.startswith("configs")
    ][0]])


def test_dockerfile_runs_unprivileged_through_the_entrypoint():
    instructions = dict(dockerfile())
    assert instructions["USER"] not in ("root", "0")
    assert instructions["ENTRYPOINT"] == '["flow-entrypoint"]'
    assert instructions["WORKDIR"] == "/app"


# --- shell scripts ------------------------------------------------------------------------------

@pytest.mark.parametrize("script", [SBATCH, ENTRYPOINT], ids=["sbatch", "entrypoint"])
def test_scripts_are_valid_bash_and_executable(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert script.stat().st_mode & stat.S_IXUSR
    assert script.read_text().startswith("#!")


def fake_bin(tmp_path: Path, scripts: dict[str, str]) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


RECORD = 'printf "%s\\n" "$(basename "$0") $*" >> "$FAKE_LOG"\n'


def test_entrypoint_execs_and_keeps_existing_keys(tmp_path):
    env = fake_bin(tmp_path, {"flow": RECORD})
    env["FAKE_LOG"] = str(tmp_path / "log")
    run = subprocess.run(["bash", str(ENTRYPOINT), "flow", "keys", "generate", str(tmp_path / "k")],
                         env=env, capture_output=True, text=True, check=True)
    assert (tmp_path / "log").read_text() == f"flow keys generate {tmp_path / 'k'}\n"
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "server.key_secret").write_text("x")
    run = subprocess.run(["bash", str(ENTRYPOINT), "flow", "keys", "generate", str(tmp_path / "k")],
                         env=env, capture_output=True, text=True, check=True)
    assert "keeping the CURVE keys" in run.stdout
    assert (tmp_path / "log").read_text().count("\n") == 1           # flow not called again
    run = subprocess.run(["bash", str(ENTRYPOINT), "flow", "agent", "--connect", "tcp://r:1"],
                         env=env, capture_output=True, text=True, check=True)
    assert (tmp_path / "log").read_text().splitlines()[-1] == "flow agent --connect tcp://r:1"


def test_entrypoint_gives_up_waiting_for_keys(tmp_path):
    env = {**os.environ, "FLOW_WAIT_FOR_KEYS": str(tmp_path), "FLOW_WAIT_TIMEOUT": "0"}
    run = subprocess.run(["bash", str(ENTRYPOINT), "true"], env=env, capture_output=True, text=True)
    assert run.returncode == 78 and "no keys" in run.stderr


def test_sbatch_directives_and_commands():
    text = SBATCH.read_text()
    directives = re.findall(r"^#SBATCH (.+)$", text, flags=re.M)
    assert "--ntasks-per-node=1" in directives
    first_command = next(i for i, ln in enumerate(text.splitlines())
                         if ln.strip() and not ln.startswith("#"))
    last_directive = max(i for i, ln in enumerate(text.splitlines()) if ln.startswith("#SBATCH"))
    assert last_directive < first_command                # sbatch ignores directives after code
    assert re.search(r"^srun .*--ntasks-per-node=1", text, flags=re.M)
    assert "flow keys generate" in text
    assert "flow run" in text and "flow agent --connect" in text
    used = set(re.findall(r"\bflow (\w+)", text)) & {"run", "agent", "keys", "validate", "gui"}
    assert used == CLI_SUBCOMMANDS


def test_sbatch_places_router_on_first_node_and_one_agent_per_node(tmp_path):
    """Run the script with stand-ins: srun runs its command once (as node 0) and logs its options."""
    srun = (
        'all="$*"; printf "srun %s\\n" "${all//$\'\\n\'/ }" >> "$FAKE_LOG"\n'
        'while [[ $# -gt 0 && "$1" == --* ]]; do shift; done\n'
        'SLURM_NODEID=0 "$@"\n'
    )
    # the router "runs" for 0.5 s, so the agents (started after it) get to start too
    flow = RECORD + '[[ "$1" == run ]] && sleep 0.5\nexit 0\n'
    env = fake_bin(tmp_path, {"flow": flow, "srun": srun, "scontrol": "printf 'n1\\nn2\\n'\n"})
    submit = tmp_path / "submit"
    submit.mkdir()
    env.update(FAKE_LOG=str(tmp_path / "log"), SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="n[1-2]",
               SLURM_SUBMIT_DIR=str(submit), SLURM_CPUS_PER_TASK="8")
    subprocess.run(["bash", str(SBATCH), "configs/dl1.yaml"], env=env, cwd=submit, check=True,
                   capture_output=True, text=True, timeout=60)
    job = submit / "flow-job-4242"
    keys = job / "keys"
    log = (tmp_path / "log").read_text().splitlines()
    port = 20000 + 4242
    assert log[0] == f"flow keys generate {keys}"
    router_srun = next(ln for ln in log if ln.startswith("srun") and "flow run" in ln)
    agent_srun = next(ln for ln in log if ln.startswith("srun") and "flow agent" in ln)
    assert "--nodelist=n1" in router_srun and "--ntasks=1" in router_srun
    assert "--ntasks-per-node=1" in agent_srun and "--nodes=2" in agent_srun
    assert f"flow run configs/dl1.yaml --bind tcp://0.0.0.0:{port} --keys {keys}" in log
    # node 0 also hosts the router: its agent leaves FLOW_ROUTER_CPUS=2 of the 8 cores
    assert f"flow agent --connect tcp://n1:{port} --cpus 6 --keys {keys}" in log
    assert stat.S_IMODE(job.stat().st_mode) == 0o700
    assert shlex.split(router_srun)[0] == "srun"
