"""Inputs and outputs of the IACT step library.

- `stages.io.simtel.SimtelSource`: sim_telarray files read with eventio (R1 waveforms as ctapipe).
- `stages.io.toy.ToyEventSource`: synthetic showers, deterministic per seed and event index.
- `stages.io.dl1.DL1Source`: re-reads DL1 files written by `DL1Writer`.
- `stages.io.hdf5.DL1Writer` / `DL2Writer`: ctapipe-compatible HDF5 output, resumable.
- `stages.io.geometry`: toy camera geometries and ctapipe's pixel-neighbour relation.

Modules are imported lazily by the engine (``use: stages.io.toy:ToyEventSource``), so importing this
package stays cheap.
"""
