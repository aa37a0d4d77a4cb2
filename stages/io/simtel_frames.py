"""The serial half of reading a sim_telarray file: its eventio objects framed into raw array events.

`SimtelFrames` reads, decompresses and frames the file (eventio's ``EventIOFile`` stream and its
header parser) without parsing any payload, and yields per array event one ``simtel_raw`` record:
the raw bytes (``uint8``) of the top-level objects that make the event, in file order: the current
``MCShower`` (again for each re-use of the shower), ``MCEvent``, ``TelescopeData``,
``MCPhotoelectronSum``, the ``CameraMonitoring``/``LaserCalibration`` of its telescopes when they
differ from those published in the context, then the ``ArrayEvent`` (or ``CalibrationEvent``).
`stages.io.simtel_parser.SimtelParser`, a stager scaled over workers, parses them into exactly the
events `SimtelSource` yields (`frame_events` follows eventio's ``SimTelFile`` state machine).

Per file, the context (key ``simtel_frames.{step name}``) holds the run record
(`stages.io.simtel_event.run_record`) and the monitoring of each telescope as it stands at the
file's first array event (`initial_monitoring`), so that events carry monitoring only when it
changed. Everything else is `SimtelSource`'s: the same keys, context, max_events, allowed_tels,
calibration-event skipping, reader thread with ``read_timeout_s``, and SimtelReadWarning ending the
stream (after the last complete event) on a truncated or corrupt file; ``max_event_mb`` bounds each
raw object before it is read.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from eventio.base import EventIOFile, check_sync_bytes, parse_extension_field
from eventio.header import parse_header_bytes

from flow.errors import DataError
from flow.graph.step import Keyed

from ..datasets import resolve_path
from .simtel import SimtelSource

HEAD = 16  # sync marker and object header of a top-level object
MC_SHOWER, MC_EVENT, ARRAY_EVENT, CALIBRATION_EVENT = 2020, 2021, 2010, 2028
CAMERA_MONITORING, LASER_CALIBRATION, TELESCOPE_DATA, PE_SUM = 2022, 2023, 1204, 2026
CALIBRATION_PE, HISTOGRAMS, RUN_HEADER, TRIGGER_INFORMATION = 2034, 100, 2000, 2009
MONITORING = (CAMERA_MONITORING, LASER_CALIBRATION)
CONTEXT_KEY = "simtel_frames.{}"


def read_objects(stream, max_bytes: int) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, id, offset, raw bytes) of each top-level object of an eventio byte stream (anything
    with ``read(n)``). EOFError when the stream ends inside an object, ValueError on a bad sync
    marker or an object larger than ``max_bytes``."""
    offset = 0
    while True:
        head = stream.read(HEAD)
        if not head:
            return
        if len(head) < HEAD:
            raise EOFError("File seems to be truncated")
        check_sync_bytes(head[:4])
        header = parse_header_bytes(head[4:], toplevel=True)
        if header.extended:
            ext = stream.read(4)
            if len(ext) < 4:
                raise EOFError("File seems to be truncated")
            head += ext
            header.content_size += parse_extension_field(ext)
        if header.content_size > max_bytes:
            raise ValueError(f"object {header.type} at byte {offset} holds {header.content_size} "
                             f"bytes, more than max_event_mb")
        content = stream.read(header.content_size)
        if len(content) < header.content_size:
            raise EOFError("File seems to be truncated")
        yield header.type, header.id, offset, head + content
        offset += len(head) + len(content)


def sub_headers(raw: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(type, id, content start, content end) of the sub-objects in ``raw[start:end]``, from their
    headers only (EOFError if one is cut)."""
    pos = start
    while pos < end:
        header = parse_header_bytes(raw[pos:pos + 12])
        if header.extended:
            header.content_size += parse_extension_field(raw[pos + 12:pos + 16])
        content = pos + header.header_size
        pos = content + header.content_size
        yield header.type, header.id, content, pos


def array_event_info(raw: bytes, calibration: bool, allowed) -> tuple[int, list[int]]:
    """(event id, telescope ids with data) of an ArrayEvent, or of the ArrayEvent inside a
    CalibrationEvent, as eventio's ``parse_array_event`` finds them, from the headers only."""
    from eventio.base import KNOWN_OBJECTS
    from eventio.simtel.objects import TelescopeEvent

    top = parse_header_bytes(raw[4:HEAD], toplevel=True)
    event_id, start, end = top.id, top.header_size, len(raw)
    if calibration:
        kind, event_id, start, end = next(sub_headers(raw, start, end))
        if kind != ARRAY_EVENT:
            raise ValueError(f"CalibrationEvent holds object {kind}, not an ArrayEvent")
    tels = []
    for i, (kind, obj_id, _, _) in enumerate(sub_headers(raw, start, end)):
        if i == 0:
            if kind != TRIGGER_INFORMATION:
                raise ValueError(f"ArrayEvent starts with object {kind}, not TriggerInformation")
            event_id = obj_id or event_id
        elif KNOWN_OBJECTS.get(kind) is TelescopeEvent:
            tel_id = TelescopeEvent.type_to_telid(kind)
            if allowed is None or tel_id in allowed:
                tels.append(tel_id)
    return event_id, tels


def telescope_of(raw: bytes) -> int:
    """Telescope id of a raw CameraMonitoring or LaserCalibration (as eventio decodes it)."""
    from .simtel_parser import object_of

    return int(object_of(raw).telescope_id)


class EventFramer:
    """eventio's SimTelFile state machine on raw objects: the current shower, event and each
    telescope's monitoring objects; `feed` takes the file's objects in order and returns each
    array event it completes (``{"event_id", "type", "objects": [raw...], "tels"}``)."""

    def __init__(self, allowed=None, skip_calibration: bool = True):
        self.allowed, self.skip_calibration = allowed, skip_calibration
        self.shower = self.calib_pe = self.current = self.snapshot = None
        self.monitoring: dict = {CAMERA_MONITORING: {}, LASER_CALIBRATION: {}}

    def feed(self, kind: int, obj_id: int, offset: int, raw: bytes) -> dict | None:
        """One top-level object in; the event it completes (or None) out."""
        if kind == MC_EVENT:
            return self.start({"type": "data", "objects": [self.shower, raw] if self.shower
                               else [raw]})
        if kind in (ARRAY_EVENT, CALIBRATION_EVENT):
            return self.add_array_event(kind, obj_id, raw)
        if kind == MC_SHOWER:
            self.shower = raw
        elif kind in (TELESCOPE_DATA, PE_SUM) and self.current is not None:
            self.current["objects"].append(raw)
        elif kind in MONITORING:
            self.monitoring[kind][telescope_of(raw)] = (offset, raw)
        elif kind == CALIBRATION_PE:
            self.calib_pe = raw
        return None

    def start(self, event: dict) -> dict | None:
        """Begin ``event``; the previous one if complete."""
        done, self.current = self.finish(), event
        return done

    def finish(self) -> dict | None:
        """The current event if it is one SimTelFile yields (telescopes with data; calibration
        events unless skipped), else None."""
        event = self.current
        if event and event.get("tels") and (event["type"] == "data" or not self.skip_calibration):
            return event
        return None

    def add_array_event(self, kind: int, obj_id: int, raw: bytes) -> dict | None:
        """An ArrayEvent (or CalibrationEvent): the current event's last object, after the
        monitoring of its telescopes that changed since the first array event."""
        if self.snapshot is None:
            self.snapshot = {t: self.offsets(t) for k in MONITORING for t in self.monitoring[k]}
        done = None
        if kind == CALIBRATION_EVENT or self.shower is None:
            done = self.start({"type": "calibration", "objects": []})
            if kind == CALIBRATION_EVENT:
                self.current["calibration_type"] = obj_id
                if self.calib_pe is not None:
                    self.current["objects"].append(self.calib_pe)
                    self.calib_pe = None
        if self.current is None:
            raise ValueError("an ArrayEvent before any MCEvent")
        event_id, tels = array_event_info(raw, kind == CALIBRATION_EVENT, self.allowed)
        for tel_id in tels:
            if self.offsets(tel_id) != self.snapshot.get(tel_id, (None, None)):
                self.current["objects"].extend(
                    self.monitoring[k][tel_id][1] for k in MONITORING
                    if tel_id in self.monitoring[k])
        self.current["objects"].append(raw)
        self.current.update(event_id=event_id, tels=tels)
        return done

    def offsets(self, tel_id: int) -> tuple:
        """Where the telescope's current CameraMonitoring and LaserCalibration start (or None)."""
        return tuple(self.monitoring[k].get(tel_id, (None,))[0] for k in MONITORING)


def frame_events(objects, allowed=None, skip_calibration: bool = True) -> Iterator[dict]:
    """The raw array events (`EventFramer`) of a file's framed objects (`read_objects`): what
    eventio's SimTelFile would yield (non-triggered showers dropped, calibration events unless
    ``skip_calibration``). An event carries a telescope's CameraMonitoring and LaserCalibration
    whenever they differ from those it had at the file's first array event (`initial_monitoring`,
    in the context). On a truncated file, the last event read whole comes out, then the EOFError.
    """
    framer = EventFramer(allowed, skip_calibration)
    try:
        for kind, obj_id, offset, raw in objects:
            if kind == HISTOGRAMS:   # the end of the file's events
                break
            event = framer.feed(kind, obj_id, offset, raw)
            if event is not None:
                yield event
    except EOFError:
        if (event := framer.finish()) is not None:
            yield event
        raise
    if (event := framer.finish()) is not None:
        yield event


def initial_monitoring(path: str, allowed, max_bytes: int) -> dict[int, dict]:
    """Each telescope's monitoring at the file's first array event, parsed into the fields
    `stages.io.simtel_event.convert_event` reads (see `monitoring_fields`)."""
    from .simtel_parser import object_of

    latest: dict = {CAMERA_MONITORING: {}, LASER_CALIBRATION: {}}
    with EventIOFile(path) as stream:
        try:
            for kind, _, _, raw in read_objects(stream, max_bytes):
                if kind in MONITORING and (allowed is None or telescope_of(raw) in allowed):
                    latest[kind][telescope_of(raw)] = raw
                elif kind in (ARRAY_EVENT, CALIBRATION_EVENT, HISTOGRAMS):
                    break
        except (EOFError, ValueError):  # no event: nothing to publish, the reader will warn
            pass
    out: dict[int, dict] = {}
    for kind, key in ((CAMERA_MONITORING, "camera_monitoring"),
                      (LASER_CALIBRATION, "laser_calibration")):
        for tel_id, raw in latest[kind].items():
            out.setdefault(int(tel_id), {})[key] = monitoring_fields(kind, object_of(raw).parse())
    return out


def monitoring_fields(kind: int, parsed: dict) -> dict:
    """The fields of a parsed CameraMonitoring or LaserCalibration that the R1 recipe uses."""
    keys = ("pedestal", "n_ped_slices") if kind == CAMERA_MONITORING else ("calib", "tm_calib")
    return {k: parsed[k] for k in keys}


class SimtelFrames(SimtelSource):
    """The raw array events of a sim_telarray file, for `SimtelParser` workers to parse."""

    def publish_context(self) -> dict:
        if not hasattr(self, "_frames_context"):
            context = dict(super().publish_context())
            path = resolve_path(self.path)
            record = dict(self._record)
            allowed = set(self.allowed_tels) if self.allowed_tels else None
            record["max_event_mb"] = float(self.max_event_mb)
            record["allowed_tels"] = sorted(allowed) if allowed else None
            monitoring = initial_monitoring(str(path), allowed, self._max_bytes())
            context[CONTEXT_KEY.format(self.name)] = {"run": record, "monitoring": monitoring}
            self._frames_context = context
        return self._frames_context

    def _max_bytes(self) -> int:
        return int(self.max_event_mb * 2**20)

    def process(self) -> Iterator[Keyed]:
        path = resolve_path(self.path)
        if not path.is_file():
            raise DataError(f"sim_telarray file {path} does not exist")
        try:
            stream = EventIOFile(str(path))
        except Exception as exc:
            raise DataError(f"{path}: cannot read the sim_telarray file ({exc})") from exc
        allowed = set(self.allowed_tels) if self.allowed_tels else None
        state = {"obs_id": None}
        objects = self._run_header(read_objects(stream, self._max_bytes()), state)
        events = frame_events(objects, allowed, self.skip_calibration_events)
        yield from self._pump(path, events, stream.close,
                              lambda item, event_id: self._raw_event(item, event_id, state))

    @staticmethod
    def _run_header(objects, state: dict):
        """The objects, noting the run number of the RunHeader in ``state`` on the way."""
        from .simtel_parser import object_of

        for item in objects:
            if item[0] == RUN_HEADER:
                state["obs_id"] = int(object_of(item[3]).parse()["run"])
            yield item

    def _raw_event(self, item: dict, event_id: int, state: dict) -> dict:
        if state["obs_id"] is None:
            raise ValueError("no RunHeader before the first event")
        blob = np.frombuffer(b"".join(item["objects"]), dtype=np.uint8)
        raw = {"source": self.name, "type": item["type"], "objects": blob}
        if "calibration_type" in item:
            raw["calibration_type"] = int(item["calibration_type"])
        return {"obs_id": state["obs_id"], "event_id": event_id, "simtel_raw": raw}
