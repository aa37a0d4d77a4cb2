"""The simulation configuration of `stages.io.toy` runs, as ctapipe's tools weight with it.

`ToyEventSource` draws showers from an E^-2 spectrum between `E_MIN_TEV` and `E_MAX_TEV`, cores
uniform in a disc of `MAX_SCATTER_M` and, for protons and electrons, directions uniform in a cone of
`VIEWCONE_DEG` around the pointing; it redraws a shower until one telescope triggers and records
the number of draws of each event as ``event["simulation"]["n_thrown"]``. `simulation_context` is
what the source publishes as ``context["simulation"]``: the fields of ctapipe's
``SimulationConfigContainer`` (except ``n_showers``, known only once the run is over: the writers
sum ``n_thrown``) and the observation block. `shower_distribution` is ctapipe's
``SimulatedShowerDistribution`` of ``n_thrown`` showers: their number, and the histogram the
spectrum and the disc give (expected counts in the bins of ctapipe's simtel histogram).
"""

from __future__ import annotations

import numpy as np

E_MIN_TEV, E_MAX_TEV, SPECTRAL_INDEX = 0.05, 50.0, -2.0
MAX_SCATTER_M = 400.0
VIEWCONE_DEG = 3.0
PRIMARY_IDS = {"gamma": 0, "electron": 1, "proton": 101}
START_TIME_UNIX = 1.6e9  # fixed: toy runs are reproducible


def simulation_context(obs_id: int, alt_rad: float, az_rad: float, diffuse: bool,
                       height_m: float) -> dict:
    """``context["simulation"]`` of a toy run: ``run`` (ctapipe fields) and ``observation``."""
    cone = VIEWCONE_DEG if diffuse else 0.0
    run = {"run_number": obs_id, "corsika_version": 0, "simtel_version": 0,
           "energy_range_min": E_MIN_TEV, "energy_range_max": E_MAX_TEV,
           "prod_site_alt": height_m, "spectral_index": SPECTRAL_INDEX, "shower_reuse": 1,
           "max_alt": alt_rad, "min_alt": alt_rad, "max_az": az_rad, "min_az": az_rad,
           "diffuse": int(diffuse), "max_viewcone_radius": cone, "min_viewcone_radius": 0.0,
           "max_scatter_range": MAX_SCATTER_M, "min_scatter_range": 0.0, "core_pos_mode": 0}
    observation = {"obs_id": obs_id, "time_unix": START_TIME_UNIX, "az": az_rad, "alt": alt_rad,
                   "tracking_mode": 0}
    return {"run": run, "observation": observation, "thrown_key": "n_thrown"}


def shower_distribution(n_thrown: int) -> dict:
    """SimulatedShowerDistribution of ``n_thrown`` toy showers (expected counts per bin)."""
    log_e = np.linspace(-3, 3, 121)
    core = np.linspace(0, 4000, 201)
    e = 10**log_e
    g = SPECTRAL_INDEX + 1
    lo, hi = np.clip(e[:-1], E_MIN_TEV, E_MAX_TEV), np.clip(e[1:], E_MIN_TEV, E_MAX_TEV)
    energy_frac = (hi**g - lo**g) / (E_MAX_TEV**g - E_MIN_TEV**g)
    r_lo, r_hi = np.clip(core[:-1], 0, MAX_SCATTER_M), np.clip(core[1:], 0, MAX_SCATTER_M)
    area_frac = (r_hi**2 - r_lo**2) / MAX_SCATTER_M**2
    hist = np.maximum(n_thrown * energy_frac[:, None] * area_frac[None, :], 0.0)
    return {"hist_id": 6, "n_entries": int(n_thrown), "bins_core_dist": core, "bins_energy": e,
            "histogram": hist.astype(np.float32)}
