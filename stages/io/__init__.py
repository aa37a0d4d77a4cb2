"""Inputs and outputs of the IACT step library.

- `stages.io.simtel.SimtelSource`: sim_telarray files read with eventio (R1 waveforms as ctapipe);
  split for scaling: `simtel_frames.SimtelFrames` (serial: read, decompress, frame raw objects)
  and `simtel_parser.SimtelParser` (a stager: parses them into the same events); the R1 recipe
  itself, pure functions, in `simtel_event`.
- `stages.io.toy.ToyEventSource`: synthetic showers, deterministic per seed and event index.
- `stages.io.dl1.DL1Source`: re-reads DL1 files written by `DL1Writer`.
- `stages.io.toy_particles.ToyParticleSource`: toy runs of one particle type (IRF productions).
- `stages.io.hdf5.DL1Writer` / `DL2Writer`: HDF5 in ctapipe 0.28's data model, resumable; the
  layout in `ctapipe_schema` (+ JSON), `ctapipe_layout`, `ctapipe_events`, `ctapipe_config`,
  `ctapipe_time`; run metadata of sim_telarray inputs in `simtel_meta`, of toy runs in
  `toy_simconfig`; flow's context tree in `h5context`.
- `stages.io.geometry`: toy camera geometries and ctapipe's pixel-neighbour relation.

Modules are imported lazily by the engine (``use: stages.io.toy:ToyEventSource``), so importing this
package stays cheap.
"""
