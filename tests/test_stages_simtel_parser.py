"""The split sim_telarray reader (SimtelFrames -> SimtelParser workers) through real processes:
``flow run configs/simtel_dl2.yaml`` writes exactly the tables the whole reader (one SimtelSource)
writes, with processes and ``--inline``; a corrupt object is dead-lettered under ``parse`` and the
other events go through; ``--resume`` completes a partial run to the same tables."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import GAMMA_TEST, SST1M
from test_configs import ROOT, assert_same_tables, event_tables, flow

CONFIG = ROOT / "configs" / "simtel_dl2.yaml"


def whole_reader_config(tmp_path: Path) -> Path:
    """configs/simtel_dl2.yaml with the reader unsplit: one SimtelSource, no parse step."""
    spec = yaml.safe_load(CONFIG.read_text())
    parse = next(s for s in spec["steps"] if s["name"] == "parse")
    spec["steps"].remove(parse)
    read = spec["steps"][0]
    read.update(use="stages.io.simtel:SimtelSource", to=parse["to"])
    path = tmp_path / "whole.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run(tmp_path: Path, tag: str, config: Path, data: Path, *extra: str) -> tuple[dict, Path]:
    """(summary, output file) of ``flow run config`` on ``data``."""
    out, summary = tmp_path / f"{tag}.h5", tmp_path / f"{tag}.json"
    done = flow("run", str(config), "--quiet", "--set", f"read.path={data}",
                "--set", f"write.path={out}", "--summary-json", str(summary),
                "--dead-letter", str(tmp_path / f"{tag}.dl.jsonl"), *extra)
    assert done.returncode in (0, 1), f"{tag}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return json.loads(summary.read_text()), out


@pytest.fixture(scope="module")
def sst1m_split(tmp_path_factory, data_file):
    """The SST-1M file through configs/simtel_dl2.yaml as shipped (split reader, processes)."""
    tmp = tmp_path_factory.mktemp("split")
    summary, out = run(tmp, "split", CONFIG, data_file(SST1M))
    assert summary["exit_code"] == 0 and summary["produced"] == 31
    return event_tables(out)


def test_shipped_config_splits_the_reader():
    steps = {s["name"]: s for s in yaml.safe_load(CONFIG.read_text())["steps"]}
    assert steps["read"]["use"] == "stages.io.simtel_frames:SimtelFrames"
    assert steps["parse"]["use"] == "stages.io.simtel_parser:SimtelParser"
    assert steps["read"]["to"] == ["parse"] and steps["parse"]["to"] == ["calibrate"]


def test_sst1m_split_equals_whole_reader_and_inline(tmp_path, data_file, sst1m_split):
    summary, whole = run(tmp_path, "whole", whole_reader_config(tmp_path), data_file(SST1M))
    assert summary["exit_code"] == 0 and summary["produced"] == 31
    assert_same_tables(sst1m_split, event_tables(whole))
    summary, inline = run(tmp_path, "inline", CONFIG, data_file(SST1M), "--inline")
    assert summary["produced"] == 31
    assert_same_tables(sst1m_split, event_tables(inline))
    assert any(name.startswith("/dl1/event/telescope/parameters/") for name in sst1m_split)


def test_gamma_test_split_equals_whole_reader(tmp_path, data_file):
    """Another camera mix (prod3, 100+ telescopes, late laser calibrations, a cut end)."""
    split_summary, split = run(tmp_path, "split", CONFIG, data_file(GAMMA_TEST))
    whole_summary, whole = run(tmp_path, "whole", whole_reader_config(tmp_path),
                               data_file(GAMMA_TEST))
    assert split_summary["produced"] == whole_summary["produced"] > 0
    assert split_summary["warnings"] == whole_summary["warnings"]   # the file's end is cut
    assert_same_tables(event_tables(split), event_tables(whole))


def corrupt_one_telescope_event(plain: bytes, index: int) -> bytes:
    """``plain`` with the first TelescopeEvent of its ``index``-th ArrayEvent holding a wrong
    first sub-object type: the framing stays intact, eventio's parse_telescope_event raises."""
    from eventio.base import KNOWN_OBJECTS
    from eventio.simtel.objects import TelescopeEvent

    from stages.io.simtel_frames import ARRAY_EVENT, read_objects, sub_headers

    arrays = [(offset, raw) for kind, _, offset, raw in read_objects(io.BytesIO(plain), 2**40)
              if kind == ARRAY_EVENT]
    offset, raw = arrays[index]
    start = next(c for kind, _, c, _ in sub_headers(raw, 16, len(raw))
                 if KNOWN_OBJECTS.get(kind) is TelescopeEvent)
    word = int.from_bytes(raw[start:start + 4], "little")
    data = bytearray(plain)
    pos = offset + start
    data[pos:pos + 4] = ((word & ~0xFFFF) | 2099).to_bytes(4, "little")
    return bytes(data)


def test_a_corrupt_object_is_dead_lettered_under_parse_and_the_rest_go_through(
        tmp_path, data_file, sst1m_split):
    import zstandard

    from stages.io.simtel import SimtelSource

    path = data_file(SST1M)
    keys = [k.key for k in SimtelSource(path=str(path)).process()]
    with open(path, "rb") as f:
        plain = zstandard.ZstdDecompressor().stream_reader(f).read()
    bad = tmp_path / "corrupt.simtel"
    bad.write_bytes(corrupt_one_telescope_event(plain, 5))
    summary, out = run(tmp_path, "corrupt", CONFIG, bad)
    assert summary["produced"] == 31 and summary["unique_consumed"]["write"] == 30
    dead = [json.loads(x) for x in (tmp_path / "corrupt.dl.jsonl").read_text().splitlines()]
    assert [(d["key"], d["step"]) for d in dead] == [(keys[5], "parse")]
    assert "WrongType" in dead[0]["traceback"] or "Wrong" in dead[0]["exception"]
    bad_id = int(keys[5].split(":")[1])
    expected = {name: rows[rows["event_id"] != bad_id] if "event_id" in rows.dtype.names else rows
                for name, rows in sst1m_split.items()}
    got = event_tables(out)
    # the service statistics count what the run saw: one event fewer, the same tables
    service = sorted(k for k in expected if "/service/" in k)
    assert service and service == sorted(k for k in got if "/service/" in k)
    stats = "/dl2/service/tel_event_statistics/HillasReconstructor"
    lost = sum(int(np.sum(rows["event_id"] == bad_id)) for name, rows in sst1m_split.items()
               if name.startswith("/dl1/event/telescope/parameters/"))
    assert got[stats]["counts"][0] == sst1m_split[stats]["counts"][0] - lost
    assert_same_tables({k: v for k, v in expected.items() if len(v) and k not in service},
                       {k: v for k, v in got.items() if k not in service})


def test_resume_completes_a_partial_run_to_the_same_tables(tmp_path, data_file, sst1m_split):
    path = data_file(SST1M)
    first, out = run(tmp_path, "resume", CONFIG, path, "--set", "read.max_events=10")
    assert first["produced"] == 10
    tables = event_tables(out)
    assert 0 < len(np.unique(tables["/simulation/event/subarray/shower"]["event_id"])) <= 10
    again, out = run(tmp_path, "resume", CONFIG, path, "--resume")
    assert again["exit_code"] == 0
    assert_same_tables(sst1m_split, event_tables(out))
