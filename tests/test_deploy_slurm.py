"""docker/slurm/flow.sbatch on a real one-node Slurm cluster (docker/slurm/local-cluster.sh).

The job is submitted with `sbatch`, the demo graph runs under `srun` (router and one agent, with
CURVE keys), and the test reads the job's state and exit code back from Slurm and the exact counts
from the run's summary. What one node cannot show (several nodes, the agent CPU split) stays with
the stand-in tests of tests/test_deploy_files.py.

Skipped only where Slurm is not installed and cannot be started; `.ci/run` installs it and sets
FLOW_REQUIRE_SLURM=1, and then a missing cluster fails the test instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "docker" / "slurm" / "local-cluster.sh"
SBATCH = ROOT / "docker" / "slurm" / "flow.sbatch"
N_EVENTS = 200
DONE_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
               "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def unavailable(why: str):
    if os.environ.get("FLOW_REQUIRE_SLURM") == "1":
        pytest.fail(f"Slurm is required here (FLOW_REQUIRE_SLURM=1): {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def cluster():
    """A running one-node cluster: the one already up, or started now (as root)."""
    tools = ("sbatch", "squeue", "scontrol", "sinfo", "slurmctld", "slurmd", "munged")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        unavailable(f"not installed: {' '.join(missing)} (apt-get install slurmctld slurmd "
                    f"slurm-client munge)")
    if subprocess.run(["bash", str(CLUSTER), "status"]).returncode != 0:
        if os.geteuid() != 0:
            unavailable("no Slurm node is up, and starting one needs root")
        start = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True,
                               timeout=120)
        if start.returncode != 0:
            pytest.fail(f"the local cluster did not start:\n{start.stdout}\n{start.stderr}")
    return True


def job_fields(job_id: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                         text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_job(job_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = job_fields(job_id)
        if fields.get("JobState") in DONE_STATES:
            return fields
        time.sleep(1.0)
    subprocess.run(["scancel", job_id])
    pytest.fail(f"job {job_id} did not finish in {timeout:.0f} s: {job_fields(job_id)}")


def test_demo_graph_as_a_real_slurm_job(cluster, tmp_path):
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    summary = tmp_path / "summary.json"
    cmd = ["sbatch", "--parsable", "--nodes=1", "--cpus-per-task=2", "--time=15",
           f"--chdir={tmp_path}", f"--output={tmp_path}/flow-%j.out", str(SBATCH),
           str(ROOT / "configs" / "demo.yaml"), "--set", f"read.n_events={N_EVENTS}",
           "--summary-json", str(summary), "--quiet"]
    sub = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip().split(";")[0]
    fields = wait_job(job_id, timeout=600)
    out = (tmp_path / f"flow-{job_id}.out").read_text()
    print(f"\nslurm job {job_id}: {fields.get('JobState')} exit {fields.get('ExitCode')} "
          f"run time {fields.get('RunTime')}")
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", out
    assert "router exited with status 0" in out
    # the agents' step ended on its TERM, not killed at the end of the grace period
    assert "Killed" not in out and "CANCELLED" not in out and "forcing" not in out, out
    s = json.loads(summary.read_text())
    assert s["produced"] == N_EVENTS
    assert s["unique_consumed"] == {"write": N_EVENTS} and s["consumed"] == {"write": N_EVENTS}
    assert s["dead_letter"] == 0 and s["failures"] == [] and s["exit_code"] == 0
    job_dir = tmp_path / f"flow-job-{job_id}"
    assert (job_dir / "keys" / "server.key").is_file() and (job_dir / "router.log").is_file()
    assert list(job_dir.glob("agent-*.log")), "one agent per node"
    assert (tmp_path / "out" / "demo_dl2.h5").stat().st_size > 0
