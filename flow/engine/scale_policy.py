"""Auto-scaling policy: how many workers each step should have, as a pure function of its statistics.

Contract: ``decide(stats, config, state, now)`` reads per-step statistics and the memory of past
changes (`ScalerState`) and returns the desired worker count of every step in ``stats``, one
`Decision` (with a human-readable reason) per change, and the updated memory. It never touches
sockets, processes or the real clock; the router calls it about once a second and carries it out.
Steps absent from ``stats`` are not returned: they keep their workers and are outside the budget.

The policy, step by step:

1. Demand (workers) = ``arrivals_per_s * service_s / target_busy``, plus ``queue * service_s /
   drain_time_s`` when the queue is backlogged (growing, or too deep to drain in ``drain_time_s``
   with the spare capacity). Without a service time the busy fraction stands in for it.
2. Wanted count = ``ceil(demand)`` clamped to ``[min_workers, max_workers]``.
3. CPU budget: when the wanted counts add up to more than ``cpu_budget`` cores, the budget is shared
   in proportion to demand, each step's min guaranteed (and one worker for any step with work when
   the budget allows), rounded by largest remainder: the slowest step gets the cores.
4. Hysteresis: scale up only when demand > ``workers * (1 + hysteresis)``, the queue is growing, or
   the workers are saturated (busy >= ``saturated_busy``, so no growth can show) and demand exceeds
   the current count (with busy capped at 1, demand alone can pass ``workers * (1 + hysteresis)``
   only once arrivals outrun capacity); scale down only when demand < ``(workers - 1) * (1 - hysteresis)`` and the queue is quiet.
5. Cooldowns: an up waits ``up_cooldown_s`` after the step's last up; a down waits
   ``down_cooldown_s`` after the step's last change *and* after the last time its current count was
   needed, so periodic bursts keep their workers instead of flapping. An idle step (no arrivals,
   empty queue) drifts to its min after the down cooldown.
6. Moving cores between steps: a step over its budget share gives workers to a budget-starved step
   that is scaling up, unless it took workers within ``down_cooldown_s``; a step that gave workers
   within ``down_cooldown_s`` takes none back (it may still take free cores). In an overload that no
   integer split can serve, this keeps cores from ping-ponging between two starved steps every
   cooldown. Over the budget itself (the budget shrank), steps are cut to their share at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from flow.errors import ConfigError

_EPS = 1e-9


@dataclass(frozen=True)
class StepStats:
    """One step's statistics over the last window, as the router measures them."""

    name: str
    arrivals_per_s: float   # input rate over the last window (events/s)
    service_s: float        # mean seconds of `process` per event per worker (EWMA); 0 if unknown
    queue: int              # events waiting
    queue_trend: float      # events/s, positive when the queue grows
    busy: float             # 0..1, fraction of worker time spent in `process`
    workers: int            # current count
    min_workers: int
    max_workers: int
    done_per_s: float = 0.0  # completions/s


@dataclass(frozen=True)
class ScalerConfig:
    """Knobs of the policy; `cpu_budget` is the number of cores the scaled steps may use."""

    cpu_budget: int
    up_cooldown_s: float = 2.0
    down_cooldown_s: float = 10.0
    hysteresis: float = 0.2      # relative dead band around the current count
    target_busy: float = 0.85    # busy fraction the demand is sized for
    drain_time_s: float = 2.0    # a backlog should drain within this
    max_step_up: int = 4         # workers added to one step per decision
    queue_quiet: int = 8         # a queue at or below this is "about empty"
    saturated_busy: float = 0.95  # busy at or above this: workers cannot absorb more

    def __post_init__(self) -> None:
        if self.cpu_budget < 1:
            raise ConfigError(f"cpu_budget must be >= 1, not {self.cpu_budget}")
        if not 0 < self.target_busy <= 1:
            raise ConfigError(f"target_busy must be in (0, 1], not {self.target_busy}")
        if not 0 <= self.hysteresis < 1:
            raise ConfigError(f"hysteresis must be in [0, 1), not {self.hysteresis}")
        if self.drain_time_s <= 0 or self.max_step_up < 1:
            raise ConfigError("drain_time_s must be > 0 and max_step_up >= 1")


@dataclass(frozen=True)
class Decision:
    """One change of a step's worker count and why (shown in the log and the monitor)."""

    step: str
    old: int
    new: int
    reason: str


@dataclass
class ScalerState:
    """The policy's only memory: per step, when it last went up, went down, and last needed its count.

    `decide` never mutates the state it is given; it returns an updated copy.
    """

    last_up: dict[str, float] = field(default_factory=dict)
    last_down: dict[str, float] = field(default_factory=dict)
    last_needed: dict[str, float] = field(default_factory=dict)

    def copy(self) -> ScalerState:
        return ScalerState(dict(self.last_up), dict(self.last_down), dict(self.last_needed))


@dataclass
class _Plan:
    """Working record of one step inside `decide`."""

    stats: StepStats
    demand: float
    want: int
    base: float = 0.0           # demand without the backlog term: the share weight
    fair: int = 0
    kind: str = "hold"          # hold | up | down | idle | bounds
    goal: int = 0
    can_donate: bool = False    # over its fair share and may give cores to a starved step
    may_take: bool = False      # may take cores from donors (has not given any lately)


def service_time(s: StepStats) -> float | None:
    """Seconds per event per worker: measured, else derived from busy and completions, else None."""
    if s.service_s > 0:
        return s.service_s
    if s.done_per_s > 0 and s.workers > 0 and s.busy > 0:
        return s.busy * s.workers / s.done_per_s
    return None


def is_growing(s: StepStats, config: ScalerConfig) -> bool:
    return s.queue > config.queue_quiet and s.queue_trend > 0


def is_quiet(s: StepStats, config: ScalerConfig) -> bool:
    return s.queue <= config.queue_quiet and s.queue_trend <= 0


def is_idle(s: StepStats) -> bool:
    return s.arrivals_per_s <= 0 and s.queue <= 0


def demand(s: StepStats, config: ScalerConfig, backlog: bool = True) -> float:
    """Workers needed to serve the arrivals at `target_busy` and drain a backlog in `drain_time_s`."""
    service = service_time(s)
    if service is None:
        if s.workers == 0:
            return 1.0 if (s.arrivals_per_s > 0 or s.queue > 0) else 0.0
        return s.workers * s.busy / config.target_busy
    need = s.arrivals_per_s * service / config.target_busy
    if backlog and s.queue > config.queue_quiet:
        spare = s.workers / service - s.arrivals_per_s
        if s.queue_trend > 0 or spare <= 0 or s.queue / spare > config.drain_time_s:
            need += s.queue * service / config.drain_time_s
    return need


def share_budget(budget: int, floor: Mapping[str, int], want: Mapping[str, int],
                 weight: Mapping[str, float]) -> dict[str, int]:
    """Split ``budget`` cores in proportion to ``weight``, each name within ``[floor, want]``.

    Water-filling: names whose proportional share falls below their floor get the floor, names above
    their want get the want, the rest share what is left; the integer counts are then rounded by
    largest remainder. If the floors alone exceed the budget, the floors are returned.
    """
    if sum(floor.values()) >= budget:
        return dict(floor)
    fixed: dict[str, int] = {}
    quota: dict[str, float] = {}
    while True:
        open_names = [n for n in want if n not in fixed]
        if not open_names:
            break
        left = budget - sum(fixed.values())
        total = sum(weight[n] for n in open_names)
        quota = {n: left * (weight[n] / total if total > 0 else 1 / len(open_names))
                 for n in open_names}
        low = {n: floor[n] for n in open_names if quota[n] < floor[n]}
        high = {n: want[n] for n in open_names if quota[n] > want[n]}
        if not low and not high:
            break
        fixed.update(low or high)      # floors first: they take from everyone else
    alloc = dict(fixed)
    alloc.update({n: math.floor(q + _EPS) for n, q in quota.items() if n not in fixed})
    leftover = budget - sum(alloc.values())
    by_remainder = sorted((n for n in quota if n not in fixed),
                          key=lambda n: quota[n] - alloc[n], reverse=True)
    for n in by_remainder:
        if leftover <= 0:
            break
        if alloc[n] < want[n]:
            alloc[n] += 1
            leftover -= 1
    return alloc


def _floors(plans: Mapping[str, _Plan], budget: int) -> dict[str, int]:
    """Each step's min, raised to one worker for steps with work when the budget allows it."""
    floors = {n: p.stats.min_workers for n, p in plans.items()}
    busy = {n: max(f, 1 if not is_idle(plans[n].stats) else f) for n, f in floors.items()}
    return busy if sum(busy.values()) <= budget else floors


def _since(times: Mapping[str, float], name: str, now: float) -> float:
    return now - times.get(name, -math.inf)


def _plan_step(p: _Plan, config: ScalerConfig, state: ScalerState, now: float) -> None:
    """Set the step's kind and goal from its demand, its fair share, hysteresis and cooldowns."""
    s, h = p.stats, config.hysteresis
    cur, name = s.workers, s.name
    p.goal = cur
    quiet_for = min(_since(state.last_up, name, now), _since(state.last_down, name, now),
                    _since(state.last_needed, name, now))
    if cur < s.min_workers or cur > s.max_workers:
        p.kind, p.goal = "bounds", min(max(cur, s.min_workers), s.max_workers)
    elif p.fair > cur:
        up_ok = _since(state.last_up, name, now) >= config.up_cooldown_s - _EPS
        saturated = s.busy >= config.saturated_busy and p.demand > cur
        if up_ok and (p.demand > cur * (1 + h) or is_growing(s, config) or saturated):
            p.kind, p.goal = "up", min(p.fair, cur + config.max_step_up)
    elif p.fair < cur:
        down_ok = quiet_for >= config.down_cooldown_s - _EPS
        if down_ok and is_idle(s):
            p.kind, p.goal = "idle", p.fair
        elif down_ok and p.demand < (cur - 1) * (1 - h) and is_quiet(s, config):
            p.kind, p.goal = "down", p.fair
        else:
            p.can_donate = (_since(state.last_up, name, now) >= config.down_cooldown_s - _EPS
                            and _since(state.last_down, name, now) >= config.up_cooldown_s - _EPS)
    p.may_take = _since(state.last_down, name, now) >= config.down_cooldown_s - _EPS


def _describe(s: StepStats, need: float) -> str:
    parts = []
    service = service_time(s)
    if service is not None:
        parts.append(f"arrivals {s.arrivals_per_s:.0f}/s x {service * 1e3:.1f} ms")
    if s.queue > 0:
        trend = f" growing {s.queue_trend:+.0f}/s" if s.queue_trend > 0 else ""
        parts.append(f"queue {s.queue}{trend}")
    parts.append(f"busy {s.busy:.2f}")
    parts.append(f"needs {need:.1f} workers")
    return ", ".join(parts)


def _reason(p: _Plan, kind: str, new: int, config: ScalerConfig, takers: list[str]) -> str:
    s = p.stats
    base = _describe(s, p.demand)
    if kind == "up":
        capped = f"; cpu budget {config.cpu_budget} shared: gets {new}" if new < p.want else ""
        return base + capped
    if kind == "idle":
        return (f"idle (no arrivals, queue empty) for {config.down_cooldown_s:.0f} s: "
                f"down to min {s.min_workers}")
    if kind == "down":
        return f"{base}; quiet for {config.down_cooldown_s:.0f} s"
    if kind == "bounds":
        return f"outside bounds [{s.min_workers}, {s.max_workers}]"
    if kind == "donate":
        return f"{base}; cpu budget {config.cpu_budget} shared with {', '.join(takers)}: gets {new}"
    return f"{base}; over cpu budget {config.cpu_budget}: gets {new}"


def decide(stats: Mapping[str, StepStats], config: ScalerConfig, state: ScalerState,
           now: float) -> tuple[dict[str, int], list[Decision], ScalerState]:
    """Desired worker count per step in ``stats``, the changes with reasons, and the new state."""
    new_state = state.copy()
    h = config.hysteresis
    plans: dict[str, _Plan] = {}
    for name, s in stats.items():
        need = demand(s, config)
        want = min(max(math.ceil(need - _EPS), s.min_workers), s.max_workers)
        plans[name] = _Plan(s, need, want, demand(s, config, backlog=False))
        if name not in new_state.last_needed or need > (s.workers - 1) * (1 - h) \
                or not is_quiet(s, config):
            new_state.last_needed[name] = now
    wants = {n: p.want for n, p in plans.items()}
    fair = wants
    if sum(wants.values()) > config.cpu_budget:
        fair = share_budget(config.cpu_budget, _floors(plans, config.cpu_budget), wants,
                            {n: p.base for n, p in plans.items()})
    for n, p in plans.items():
        p.fair = fair[n]
        _plan_step(p, config, new_state, now)
    new, kinds = _carry_out(plans, config)
    return new, _record(plans, new, kinds, config, new_state, now), new_state


def _carry_out(plans: Mapping[str, _Plan], config: ScalerConfig
               ) -> tuple[dict[str, int], dict[str, str]]:
    """Apply downs, then ups by largest deficit, taking cores from donors so the budget holds."""
    new = {n: p.stats.workers for n, p in plans.items()}
    kinds: dict[str, str] = {}
    for n, p in plans.items():
        if p.kind in ("down", "idle", "bounds"):
            new[n], kinds[n] = p.goal, p.kind
    if sum(new.values()) > config.cpu_budget:
        for n, p in plans.items():
            if new[n] > p.fair:
                new[n], kinds[n] = p.fair, "over"
    ups = sorted((n for n, p in plans.items() if p.kind == "up"),
                 key=lambda n: plans[n].demand - plans[n].stats.workers, reverse=True)
    donors = sorted((n for n, p in plans.items() if p.can_donate and n not in kinds),
                    key=lambda n: new[n] - plans[n].fair, reverse=True)
    for n in ups:
        need = plans[n].goal - new[n]
        short = need - (config.cpu_budget - sum(new.values()))
        for d in donors if plans[n].may_take else ():
            give = min(short, new[d] - plans[d].fair)
            if give > 0:
                new[d] -= give
                kinds[d] = "donate"
                short -= give
        new[n] += max(0, min(need, config.cpu_budget - sum(new.values())))
        kinds[n] = "up"
    return new, kinds


def _record(plans: Mapping[str, _Plan], new: Mapping[str, int], kinds: Mapping[str, str],
            config: ScalerConfig, state: ScalerState, now: float) -> list[Decision]:
    """One `Decision` per changed step; stamps the state's up/down times."""
    takers = [n for n, k in kinds.items() if k == "up" and new[n] > plans[n].stats.workers]
    decisions = []
    for n, p in plans.items():
        old = p.stats.workers
        if new[n] == old:
            continue
        (state.last_up if new[n] > old else state.last_down)[n] = now
        reason = _reason(p, kinds.get(n, "over"), new[n], config, takers)
        decisions.append(Decision(n, old, new[n], reason))
    return decisions
