"""HDF5 output in ctapipe 0.28's data model (v7.1.0), written with PyTables: no ctapipe needed.

`DL1Writer` and `DL2Writer` write what ``ctapipe-process --write-parameters --write-showers``
writes for the same events, with the same paths, columns, dtypes, units and column metadata
(`stages.io.ctapipe_schema`), so ctapipe's ``TableLoader``, ``read_table`` and tools read it::

    /configuration/instrument/...             subarray layout, optics, camera geometry and readout
    /configuration/simulation/run             SimulationConfigContainer per run
    /configuration/observation/*_block        scheduling and observation blocks
    /configuration/telescope/pointing/tel_NNN first pointing of each telescope (rad)
    /dl1/event/subarray/trigger               obs_id, event_id, time, tels_with_trigger, event_type
    /dl1/event/telescope/trigger              per telescope: time, event_type, n_trigger_pixels
    /dl1/event/telescope/parameters/tel_NNN   hillas_*, timing_*, leakage_*, ... (deg, ns)
    /dl1/event/telescope/images/tel_NNN       image, peak_time, image_mask (write_images)
    /simulation/event/subarray/shower         true_energy (TeV), true_alt/az (deg), true_core_x/y...
    /simulation/event/telescope/images/tel_NNN  true_image_sum
    /simulation/event/telescope/impact/tel_NNN  true_impact_distance (m)
    /simulation/event/telescope/parameters/tel_NNN  true_hillas_*, ... of the true image
    /simulation/service/shower_distribution   thrown showers (when the input has them)
    /dl1/service/image_statistics             ImageQualityQuery counts (`stages.io.ctapipe_service`)
    /dl2/service/tel_event_statistics/<algo>  StereoQualityQuery counts (DL2Writer)
    /dl2/event/subarray/geometry/<algo>       <algo>_alt, <algo>_az (deg), core, h_max, telescopes
    /dl2/event/telescope/impact/<algo>/tel_NNN  <algo>_tel_impact_distance (m)
    /dl2/event/subarray/energy/<algo>         <algo>_energy (TeV), <algo>_is_valid, ...
    /dl2/event/subarray/particle_type/<algo> <algo>_prediction, <algo>_is_valid, ...
    /  (attributes)                           CTA PRODUCT / ACTIVITY / INSTRUMENT ... metadata

flow's own extras stay under ``/configuration/flow``: ``context`` (the producers' subarray, read back
by `stages.io.dl1.DL1Source`), ``provenance`` (one row per run: times, versions, inputs, the graph's
step) and ``keys`` (the key of every event held, for resume).

The configuration tables come from the producers' context: ``context["simulation"]`` when a source
publishes it (`stages.io.toy`), else the sim_telarray input file named in
``context["provenance"]["input_files"]`` (`stages.io.simtel_meta`, one scan of its headers and
trigger blocks, which also gives each event's trigger time and triggered telescopes).

Rows are buffered (``buffer_rows``) and appended in blocks; ``teardown`` flushes, writes the
configuration tables and closes, so the file is valid after any stop. With ``mode: append`` an
existing file is extended and ``done_keys()`` returns the keys it already holds.
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tables

from flow.graph.params import REQUIRED, Param
from flow.graph.step import Consumer

from . import ctapipe_config as config
from . import ctapipe_events as rowsof
from . import ctapipe_service as service
from .ctapipe_layout import write_table
from .ctapipe_time import trigger_times
from .h5context import FILTERS, fingerprint, read_context, write_context  # noqa: F401 - re-exported

CTAPIPE_FILTERS = tables.Filters(complevel=5, complib="blosc:zstd", shuffle=True, fletcher32=True)
FLOW_GROUP = "/configuration/flow"
KEYS_PATH = f"{FLOW_GROUP}/keys"
CONTEXT_PATH = f"{FLOW_GROUP}/context"
PROVENANCE_PATH = f"{FLOW_GROUP}/provenance"
PARAMS_PATH = "/dl1/event/telescope/parameters"
IMAGES_PATH = "/dl1/event/telescope/images"
SHOWER_PATH = "/simulation/event/subarray/shower"
TRUE_IMAGES_PATH = "/simulation/event/telescope/images"
TRUE_PARAMS_PATH = "/simulation/event/telescope/parameters"
_SIM_FIELDS = {key: (col, "", factor) for key, (col, factor) in rowsof.SIM_FIELDS.items()}


def versions() -> dict:
    """Software versions for the provenance record."""
    out = {"python": platform.python_version(), "numpy": np.__version__, "tables": tables.__version__}
    for mod in ("flow", "eventio", "ctapipe", "astropy"):
        try:
            out[mod] = getattr(__import__(mod), "__version__", "unknown")
        except ImportError:
            pass
    return out


def stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    """One array of rows of one dtype, from their bytes (``np.concatenate`` of a thousand one-row
    arrays of a hundred columns costs 30 ms, this 0.07 ms); rows of mixed dtypes are concatenated."""
    dtype = rows[0].dtype
    if dtype.hasobject or any(row.dtype != dtype for row in rows):
        return np.concatenate(rows)
    return np.frombuffer(b"".join([row.tobytes() for row in rows]), dtype)


class SchemaBuffer:
    """Rows of one ctapipe table (one schema kind), appended in blocks.

    The table and its metadata are created with the first row (HDF5 attributes cost ~0.2 ms each,
    a parameter table has over a hundred): spread over the stream, not all at ``teardown``.
    """

    def __init__(self, h5: tables.File, path: str, kind: str, algo: str = ""):
        self.h5, self.path, self.kind, self.algo, self.rows = h5, path, kind, algo, []
        self.table = h5.get_node(path) if path in h5 else None

    def add(self, row: np.ndarray) -> None:
        if self.table is None:
            self.table = self._create(row[:0])
        self.rows.append(row)

    def _create(self, empty: np.ndarray) -> tables.Table:
        return write_table(self.h5, self.path, self.kind, empty, self.algo, filters=CTAPIPE_FILTERS)

    def flush(self) -> None:
        if not self.rows:
            return
        block = stack_rows(self.rows)
        self.table.append(block.astype(self.table.dtype, copy=False))
        self.rows = []


class HDF5Writer(Consumer):
    """Common part of the DL1 and DL2 writers: file, buffers, keys, configuration, provenance."""

    path = Param(str, REQUIRED, "output HDF5 file")
    mode = Param(str, "w", "w: overwrite; append: extend an existing file (resume)",
                 choices=("w", "append"))
    buffer_rows = Param(int, 1000, "rows buffered per table before an append")
    write_parameters = Param(bool, True, "write /dl1/event/telescope/parameters")
    write_images = Param(bool, False, "write /dl1/event/telescope/images (and true images)")
    read_input_metadata = Param(bool, True, "read the simulation configuration and trigger "
                                "information of sim_telarray inputs (one scan of their headers)")
    data_levels = ("DL1_PARAMETERS",)

    def done_keys(self) -> list[str]:
        if getattr(self, "_h5", None) is not None:
            return sorted(self._keys)
        path = Path(self.path)
        if self.mode != "append" or not path.is_file():
            return []
        with tables.open_file(path, "r") as h5:
            return self._read_keys(h5)

    @staticmethod
    def _read_keys(h5) -> list[str]:
        if KEYS_PATH not in h5:
            return []
        return [k.decode() for k in h5.get_node(KEYS_PATH).col("key")]

    def setup(self) -> None:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._h5 = tables.open_file(path, "a" if self.mode == "append" else "w")
        self._keys = set(self._read_keys(self._h5))
        self._pending_keys: list[str] = []
        self._buffers: dict[str, SchemaBuffer] = {}
        self._n_rows, self._n_thrown, self._obs_ids = 0, 0, set()
        self._pointings: dict = {}
        self._quality = service.QueryTotals()
        self._start = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        self._subarray = (self.context or {}).get("subarray") or {}
        self._tel_ids = sorted(self._subarray.get("tels", {}))
        if CONTEXT_PATH not in self._h5 and self._subarray:
            # the subarray only: per-pixel calibration is spent once images exist (and is large)
            write_context(self._h5, CONTEXT_PATH, {"subarray": self._subarray})
        if self._subarray:
            config.write_instrument(self._h5, self._subarray, CTAPIPE_FILTERS)
        self._simulation = self._simulation_info()
        self._trigger_times = trigger_times(self._simulation["triggers"])  # one call for the run

    def _simulation_info(self) -> dict:
        """The run's simulation mapping: the context's, else read from a sim_telarray input."""
        published = (self.context or {}).get("simulation")
        if published:
            return dict(published, triggers={})
        inputs = ((self.context or {}).get("provenance") or {}).get("input_files", [])
        simtel = [p for p in inputs if ".simtel" in Path(p).name]
        if not (self.read_input_metadata and simtel):
            return {"triggers": {}}
        from .simtel_meta import read_simulation_info

        return read_simulation_info(simtel[0])

    def buffer(self, path: str, kind: str, algo: str = "") -> SchemaBuffer:
        if path not in self._buffers:
            self._buffers[path] = SchemaBuffer(self._h5, path, kind, algo)
        return self._buffers[path]

    def process(self, event: dict) -> None:
        key = self.key or f"{event['obs_id']}:{event['event_id']}"
        if key in self._keys:
            return  # duplicate delivery: already held
        self.write_event(event)
        self._keys.add(key)
        self._pending_keys.append(key)
        self._n_rows += 1
        if self._n_rows % self.buffer_rows == 0:
            self.flush()

    def write_event(self, event: dict) -> None:
        obs_id = int(event["obs_id"])
        self._obs_ids.add(obs_id)
        event_id = int(event["event_id"])
        trigger = self._simulation["triggers"].get(event_id)
        for kind, row in rowsof.trigger_rows(event, self._tel_ids, trigger,
                                             self._trigger_times.get(event_id)):
            self.buffer("/" + kind, kind).add(row)
        self._note_pointing(event)
        self._quality.add(event.get("quality_counts"))
        sim = event.get("simulation")
        if sim:
            self._n_thrown += int(sim.get(self._simulation.get("thrown_key") or "", 1) or 1)
            self.buffer(SHOWER_PATH, rowsof.SHOWER).add(rowsof.shower_row(event, trigger))
            if "core_x" in sim and self._subarray:
                kind = "simulation/event/telescope/impact/tel_NNN"
                for tel_id, row in rowsof.impact_rows(event, self._subarray, kind,
                                                      "true_impact_distance", sim["core_x"],
                                                      sim["core_y"], sim["alt"], sim["az"],
                                                      uncert=0.0):
                    self.buffer(f"/simulation/event/telescope/impact/tel_{tel_id:03d}", kind).add(row)
        for tel_id, tel in (event.get("tels") or {}).items():
            self._write_tel(event, int(tel_id), tel, bool(sim))

    def _write_tel(self, event: dict, tel_id: int, tel: dict, is_sim: bool) -> None:
        name = f"tel_{tel_id:03d}"
        if self.write_parameters and tel.get("params"):
            self.buffer(f"{PARAMS_PATH}/{name}", rowsof.PARAMS).add(
                rowsof.parameter_row(event, tel_id, tel["params"]))
        if is_sim:
            self.buffer(f"{TRUE_IMAGES_PATH}/{name}", "simulation/event/telescope/images/tel_NNN"
                        ).add(rowsof.true_image_row(event, tel_id, tel, self.write_images))
            if self.write_parameters and tel.get("true_params"):  # as ctapipe: with a true image
                self.buffer(f"{TRUE_PARAMS_PATH}/{name}", rowsof.TRUE_PARAMS).add(
                    rowsof.parameter_row(event, tel_id, tel["true_params"], rowsof.TRUE_PARAMS))
        if self.write_images and "image" in tel:
            self.buffer(f"{IMAGES_PATH}/{name}", rowsof.IMAGES).add(
                rowsof.image_row(event, tel_id, tel))

    def _note_pointing(self, event: dict) -> None:
        for tel_id, tel in (event.get("tels") or {}).items():
            key = (int(event["obs_id"]), int(tel_id))
            if key not in self._pointings:
                pointing = tel.get("pointing") or event.get("pointing")
                if pointing:
                    self._pointings[key] = (pointing["az"], pointing["alt"])

    def flush(self) -> None:
        """Append every buffered row, then the keys of the events they hold."""
        for buf in self._buffers.values():
            buf.flush()
        if self._pending_keys:
            if KEYS_PATH not in self._h5:
                self._h5.create_table(FLOW_GROUP, "keys", np.dtype([("key", "S128")]),
                                      createparents=True, filters=FILTERS)
            keys = np.array([(k.encode(),) for k in self._pending_keys], dtype=[("key", "S128")])
            self._h5.get_node(KEYS_PATH).append(keys)
            self._pending_keys = []
        self._h5.flush()

    def teardown(self) -> None:
        if getattr(self, "_h5", None) is None or not self._h5.isopen:
            return
        try:
            self.flush()
            self._write_configuration()
            self._write_provenance()
        finally:
            self._h5.close()
            self._h5 = None

    def _write_configuration(self) -> None:
        h5, sim = self._h5, self._simulation
        if "image" in self._quality.totals:
            service.write_statistics(h5, service.IMAGE_STATISTICS, self._quality.totals["image"],
                                     filters=CTAPIPE_FILTERS)
        config.write_pointing(h5, {k: v for k, v in self._pointings.items()
                                   if f"/configuration/telescope/pointing/tel_{k[1]:03d}" not in h5},
                              CTAPIPE_FILTERS)
        obs = sim.get("observation")
        if obs and "/" + config.OB not in h5:
            config.write_observation(h5, obs, CTAPIPE_FILTERS)
        obs_id = int(obs["obs_id"]) if obs else min(self._obs_ids, default=0)
        if sim.get("run") and "/" + config.RUN not in h5:
            run = dict(sim["run"])
            if sim.get("thrown_key"):  # toy: the showers drawn for the events of this run
                run["n_showers"] = self._n_thrown
            config.write_simulation_run(h5, obs_id, run, CTAPIPE_FILTERS)
        dist = sim.get("shower_distribution")
        if dist is None and sim.get("thrown_key"):
            from .toy_simconfig import shower_distribution

            dist = shower_distribution(self._n_thrown)
        if dist is not None and "/" + config.SHOWER_DISTRIBUTION not in h5:
            config.write_shower_distribution(h5, obs_id, dist, CTAPIPE_FILTERS)
        config.write_product_metadata(h5, config.product_metadata(
            activity="flow run", software_version=versions().get("flow", "unknown"),
            start=self._start, data_levels=list(self.data_levels),
            subarray_name=self._subarray.get("name", "unknown"), obs_ids=sorted(self._obs_ids),
            is_simulation=bool(sim.get("run")) or SHOWER_PATH in h5))

    def _write_provenance(self) -> None:
        inputs = ((self.context or {}).get("provenance") or {}).get("input_files", [])
        record = np.array([(self._start.encode(), datetime.now(UTC).isoformat().encode(),
                            json.dumps(versions()).encode(), json.dumps(list(inputs)).encode(),
                            self._n_rows, type(self).__name__.encode(),
                            json.dumps(self.output_notes()).encode())],
                          dtype=[("start_time", "S40"), ("stop_time", "S40"), ("versions", "S1024"),
                                 ("input_files", "S4096"), ("n_events", "i8"), ("writer", "S32"),
                                 ("notes", "S2048")])
        if PROVENANCE_PATH not in self._h5:
            self._h5.create_table(FLOW_GROUP, "provenance", record.dtype, createparents=True,
                                  chunkshape=(4,))
        self._h5.get_node(PROVENANCE_PATH).append(record)

    def output_notes(self) -> dict:
        """What the provenance row says about the columns (e.g. toy estimates); none here."""
        return {}


class DL1Writer(HDF5Writer):
    """DL1 (parameters, optionally images), trigger and simulation truth, ctapipe's data model."""


class DL2Writer(HDF5Writer):
    """DL2 (geometry, energy, classification) plus DL1 parameters and truth, ctapipe's data model.

    ``energy_algorithm`` and ``classification_algorithm`` name the tables and column prefixes:
    ``ApplyModels`` (stages.models) sets the names of the models it applied, the toy estimates of
    stages.selection are written as ``ToyEnergyEstimate`` / ``ToyGammaSelection`` unless renamed.
    """

    geometry_algorithm = Param(str, "HillasReconstructor", "name of the geometry table/prefix")
    energy_algorithm = Param(str, "", "energy table/prefix (default: the event's "
                             "dl2['energy_algorithm'], else ToyEnergyEstimate)")
    classification_algorithm = Param(str, "", "classification table/prefix (default: the event's "
                                     "dl2['classification_algorithm'], else ToyGammaSelection)")
    data_levels = ("DL1_PARAMETERS", "DL2")

    def setup(self) -> None:
        super().setup()
        self._algorithms_written: dict[str, str] = {}

    def write_event(self, event: dict) -> None:
        super().write_event(event)
        dl2 = event.get("dl2")
        if not dl2:
            return
        algo = self.geometry_algorithm
        if "alt" in dl2:
            self.buffer(f"/dl2/event/subarray/geometry/{algo}", rowsof.GEOMETRY, algo).add(
                rowsof.geometry_row(event, algo, self._tel_ids))
            if self._subarray:
                self._write_impact(event, algo)
        for g_algo, geometry in (dl2.get("geometries") or {}).items():  # e.g. disp (ApplyModels)
            self.buffer(f"/dl2/event/subarray/geometry/{g_algo}", rowsof.GEOMETRY, g_algo).add(
                rowsof.geometry_row(dict(event, dl2=geometry), g_algo, self._tel_ids))
        if "energy" in dl2:
            e_algo = self.energy_algorithm or dl2.get("energy_algorithm", "ToyEnergyEstimate")
            self._algorithms_written["energy"] = e_algo
            self.buffer(f"/dl2/event/subarray/energy/{e_algo}", rowsof.ENERGY, e_algo).add(
                rowsof.energy_row(event, e_algo, self._tel_ids))
        if "gammaness" in dl2:
            c_algo = (self.classification_algorithm
                      or dl2.get("classification_algorithm", "ToyGammaSelection"))
            self._algorithms_written["classification"] = c_algo
            self.buffer(f"/dl2/event/subarray/particle_type/{c_algo}", rowsof.CLASSIFICATION,
                        c_algo).add(rowsof.classification_row(event, c_algo, self._tel_ids))

    def _write_impact(self, event: dict, algo: str) -> None:
        dl2 = event["dl2"]
        kind = "dl2/event/telescope/impact/{algo}/tel_NNN"
        for tel_id, row in rowsof.impact_rows(event, self._subarray, kind,
                                              f"{algo}_tel_impact_distance", dl2["core_x"],
                                              dl2["core_y"], np.deg2rad(dl2["alt"]),
                                              np.deg2rad(dl2["az"]), algo):
            self.buffer(f"/dl2/event/telescope/impact/{algo}/tel_{tel_id:03d}", kind, algo).add(row)

    def _write_configuration(self) -> None:
        super()._write_configuration()
        if "stereo" in self._quality.totals:  # the counts of the reconstructor's quality query
            service.write_statistics(self._h5, service.TEL_EVENT_STATISTICS,
                                     self._quality.totals["stereo"], self.geometry_algorithm,
                                     CTAPIPE_FILTERS)
        for kind, algo in self._algorithms_written.items():
            path = f"/dl2/event/subarray/{'particle_type' if kind == 'classification' else kind}/{algo}"
            if algo.startswith("Toy") and path in self._h5:
                self._h5.get_node(path)._v_attrs["FLOW_ESTIMATE"] = (
                    "toy estimate (stages.selection placeholder formula), not a trained model")

    def output_notes(self) -> dict:
        toy = {kind: algo for kind, algo in getattr(self, "_algorithms_written", {}).items()
               if algo.startswith("Toy")}
        if not toy:
            return {}
        return {"toy_estimates": toy, "note": "placeholder formulas of stages.selection, "
                "not trained models: use stages.models.ApplyModels for an analysis"}
