"""The parallel half of reading a sim_telarray file: raw array events parsed into R1 events.

`SimtelParser` (a stager, scaled over workers and fused into the first chain) takes the
``simtel_raw`` records of `stages.io.simtel_frames.SimtelFrames` and returns exactly the event
`SimtelSource` yields for the same array event: `parse_raw_event` rebuilds the dict eventio's
``SimTelFile`` yields (eventio's own object classes, ``parse_array_event`` and
``parse_telescope_data``, on the raw bytes), then `stages.io.simtel_event.convert_event` makes the
R1 event. A raw object that does not parse raises: the engine dead-letters that event under this
step's name, and the others go through.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from flow.errors import DataError
from flow.graph.step import Stager

from .simtel_event import convert_event, prepared_run
from .simtel_frames import CONTEXT_KEY


def object_of(raw, offset: int = 0):
    """The eventio object (its class as eventio's EventIOFile picks it) of the top-level object
    starting at ``offset`` of ``raw``, reading from memory."""
    from eventio.base import KNOWN_OBJECTS, EventIOObject, read_header, read_sync_marker

    stream = raw if isinstance(raw, io.BytesIO) else io.BytesIO(raw)
    stream.seek(offset)
    read_sync_marker(stream)
    header = read_header(stream, offset=offset, toplevel=True)
    return KNOWN_OBJECTS.get(header.type, EventIOObject)(header, filehandle=stream)


def objects_in(blob) -> Iterator:
    """The eventio objects of a sequence of raw top-level objects (one bytes-like blob)."""
    stream, offset, end = io.BytesIO(blob), 0, len(blob)
    while offset < end:
        obj = object_of(stream, offset)
        offset += obj.header.total_size
        yield obj


def parse_raw_event(raw: dict, monitoring: dict, allowed=None) -> dict:
    """The array event eventio's SimTelFile yields, from a ``simtel_raw`` record and the
    monitoring of the context (``{tel_id: {"camera_monitoring": ..., "laser_calibration": ...}}``),
    which the record's own CameraMonitoring/LaserCalibration objects override."""
    from eventio import iact
    from eventio.simtel import objects as so
    from eventio.simtel.simtelfile import parse_array_event, parse_telescope_data

    event: dict = {"type": raw["type"]}
    if raw["type"] == "data":
        event["mc_shower"] = None
    own: dict = {so.CameraMonitoring: {}, so.LaserCalibration: {}}
    calib_pe = None
    for obj in objects_in(raw["objects"]):
        if isinstance(obj, so.MCShower):
            event["mc_shower"] = obj.parse()
        elif isinstance(obj, so.MCEvent):
            event.update(event_id=obj.header.id, mc_event=obj.parse())
        elif isinstance(obj, iact.TelescopeData):
            event.update(parse_telescope_data(obj))
        elif isinstance(obj, so.MCPhotoelectronSum):
            event["photoelectron_sums"] = obj.parse()
        elif isinstance(obj, (so.CameraMonitoring, so.LaserCalibration)):
            own[type(obj)][obj.telescope_id] = obj.parse()
        elif isinstance(obj, so.CalibrationPhotoelectrons):
            calib_pe = {pe.telescope_id: pe.parse() for pe in next(obj)}
        elif isinstance(obj, so.ArrayEvent):
            event["event_id"] = obj.header.id
            event.update(parse_array_event(obj, allowed))
        elif isinstance(obj, so.CalibrationEvent):
            array_event = next(obj)
            event.update(event_id=-array_event.header.id, calibration_type=obj.type)
            event.update(parse_array_event(array_event, allowed))
            if calib_pe is not None:
                event["photoelectrons"] = calib_pe
        else:
            raise DataError(f"unexpected object {obj} in a raw sim_telarray event")
    if "telescope_events" not in event:
        raise DataError("a raw sim_telarray event without an ArrayEvent")
    tels = event["telescope_events"]
    event["camera_monitorings"] = current_monitoring(
        tels, own[so.CameraMonitoring], monitoring, "camera_monitoring")
    event["laser_calibrations"] = current_monitoring(
        tels, own[so.LaserCalibration], monitoring, "laser_calibration")
    return event


def current_monitoring(tels, own: dict, monitoring: dict, kind: str) -> dict:
    """Per telescope of the event, its monitoring object: the event's own (parsed), else the
    context's (``monitoring[tel_id][kind]``), else empty (as SimTelFile for a telescope without)."""
    return {t: own.get(t) or dict(monitoring.get(t, {}).get(kind, {})) for t in tels}


class SimtelParser(Stager):
    """Parses the raw array events of `SimtelFrames` into SimtelSource's R1 events."""

    def setup(self) -> None:
        self._files: dict[str, tuple] = {}

    def process(self, event: dict) -> dict:
        raw = event.get("simtel_raw")
        if raw is None:
            raise DataError(f"event {event.get('obs_id')}:{event.get('event_id')} has no "
                            "simtel_raw record: SimtelParser parses events of SimtelFrames")
        run, monitoring, allowed = self._file(raw["source"])
        array_event = parse_raw_event(raw, monitoring, allowed)
        out = convert_event(array_event, event["event_id"], run, run["max_event_mb"])
        if out is None:
            raise DataError(f"event {event['event_id']} exceeds {run['max_event_mb']} MB")
        return out

    def _file(self, source: str) -> tuple:
        """(prepared run record, monitoring, allowed telescopes) of a producer's context."""
        if not hasattr(self, "_files"):
            self.setup()
        if source not in self._files:
            key = CONTEXT_KEY.format(source)
            if key not in (self.context or {}):
                raise DataError(f"no context '{key}': SimtelParser needs the SimtelFrames "
                                f"producer '{source}' in the same graph")
            record = self.context[key]
            allowed = record["run"]["allowed_tels"]
            self._files[source] = (prepared_run(record["run"]), record["monitoring"],
                                   set(allowed) if allowed else None)
        return self._files[source]
