"""The ``faults:`` section: simulated dropouts, participation, stragglers, link failures and
corrupted silos, and what a real crash does (:mod:`fedsim.faults`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fedsim.errors import ConfigError
from fedsim.settings import Range

#: what ``faults.corrupt`` can do to a silo; the first two corrupt its training labels
CORRUPTION_KINDS = ("random_labels", "label_noise", "weight_noise")
LABEL_CORRUPTIONS = ("random_labels", "label_noise")


@dataclass
class DropoutWindow:
    """A silo absent from round ``start`` to round ``end`` (inclusive; null: for good)."""

    silo: Annotated[int, Range(ge=0)] | None = None  # the silo id (required)
    start: Annotated[int, Range(ge=0)] = 0  # first round it is absent
    end: Annotated[int, Range(ge=0)] | None = None  # last round it is absent; null: to the end of the run


@dataclass
class Straggler:
    """A silo whose compute is ``factor`` times slower in the simulated clock, in rounds
    ``start``..``end`` (null: to the end), in each such round with ``probability``."""

    silo: Annotated[int, Range(ge=0)] | None = None  # the silo id (required)
    factor: Annotated[float, Range(ge=1)] = 2.0  # its compute time is this many times the normal one
    start: Annotated[int, Range(ge=0)] = 0  # first round it may be slow
    end: Annotated[int, Range(ge=0)] | None = None  # last round it may be slow; null: to the end of the run
    probability: Annotated[float, Range(gt=0, le=1)] = 1.0  # chance (seeded) that it is slow in each such round


@dataclass
class LinkFailure:
    """The edge ``[a, b]`` down in rounds ``start``..``end`` (null: for good): no message on it,
    in either direction unless ``directed`` (then only a → b)."""

    edge: list | None = None  # [a, b]: the silo ids of an edge of the training graph (required)
    start: Annotated[int, Range(ge=0)] = 0  # first round the edge is down
    end: Annotated[int, Range(ge=0)] | None = None  # last round the edge is down; null: to the end of the run
    directed: bool = False  # only the arc a → b is down (false: both directions)


@dataclass
class Corruption:
    """Silo ``silo`` corrupted in rounds ``start``..``end`` (null: to the end): ``kind``
    random_labels / label_noise (``level``: the fraction of its training labels, 0..1) or
    weight_noise (``level``: the standard deviation of the noise on what it sends, >= 0)."""

    silo: Annotated[int, Range(ge=0)] | None = None  # the corrupted silo (required)
    kind: Literal[CORRUPTION_KINDS] | None = None  # random_labels | label_noise | weight_noise (required)
    level: Annotated[float, Range(ge=0)] | None = None  # fraction of its labels (0..1), or the noise's std (required)
    start: Annotated[int, Range(ge=0)] = 0  # first corrupted round
    end: Annotated[int, Range(ge=0)] | None = None  # last corrupted round (inclusive); null: to the end of the run


@dataclass
class FaultsConfig:
    """The ``faults:`` section: simulated dropouts, partial participation, stragglers and link
    failures (deterministic, seeded), and what a real crash of a rank does."""

    dropout: list[DropoutWindow] = field(default_factory=list)  # [{silo, start, end}]: absent silos
    participation: Annotated[float, Range(gt=0, le=1)] = 1.0  # fraction of silos drawn each round
    participants: Annotated[int, Range(ge=1)] | None = None  # or: this many silos each round
    sampling: Literal["fixed", "bernoulli"] = "fixed"  # fixed: exactly ⌈p·N⌉; bernoulli: each with p
    stragglers: list[Straggler] = field(default_factory=list)  # [{silo, factor, start, end, probability}]
    #: a straggler slower than this many times the normal compute is left out of the round
    #: (the others do not wait for it); null: everyone is waited for
    deadline: Annotated[float, Range(ge=1)] | None = None
    #: what a straggler past the deadline does: "drop" — it is left out of the round; "partial" —
    #: it takes part with the local steps it finishes in time, ⌊τ · deadline / factor⌋ of τ =
    #: train.local_steps (left out only when that is 0): silos then take different numbers of
    #: local steps, which FedNova normalises
    past_deadline: Literal["drop", "partial"] = "drop"
    links: list[LinkFailure] = field(default_factory=list)  # [{edge: [a, b], start, end, directed}]
    #: [{silo, kind, level, start, end}]: a silo that trains on corrupted labels or sends noised weights
    corrupt: list[Corruption] = field(default_factory=list)
    #: how a silo comes back after being absent: from its "last" state, from the current "theta"
    #: (the aggregate of the silos present in the round before), or "auto": theta where a server
    #: hands out Θ (CFL, as FedAvg's sampled clients get the global model), else last
    rejoin: Literal["auto", "last", "theta"] = "auto"
    #: a rank that crashes more often than --max-restarts allows: "resume" — the run stops (exit 2,
    #: resumable); "exclude" — its silos are marked failed (ϑ = 0) and the others finish the run
    on_crash: Literal["resume", "exclude"] = "resume"

    def validate(self) -> None:
        """What the types cannot say (checks against the topology and rounds: :func:`check_faults`)."""
        for name in ("dropout", "stragglers", "corrupt"):
            for n, entry in enumerate(getattr(self, name)):
                if entry.silo is None:
                    raise ConfigError(f"config key 'faults.{name}[{n}].silo' is required: the silo id (0..N-1)")
        for n, c in enumerate(self.corrupt):
            key = f"config key 'faults.corrupt[{n}]"
            if c.kind is None:
                raise ConfigError(f"{key}.kind' is required: one of {', '.join(CORRUPTION_KINDS)}")
            if c.level is None:
                raise ConfigError(f"{key}.level' is required: the fraction of labels (0..1) or the noise's "
                                  "standard deviation (weight_noise)")
            if c.kind in LABEL_CORRUPTIONS and c.level > 1:
                raise ConfigError(f"{key}.level' is {c.level:g}, and kind {c.kind} corrupts a fraction of the "
                                  "silo's labels: give a level in 0..1")
        for n, link in enumerate(self.links):
            e = link.edge
            if not (isinstance(e, list) and len(e) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                 for v in e)):
                raise ConfigError(f"config key 'faults.links[{n}].edge' expects two silo ids [a, b], got {e!r}")
        for name, entries in (("dropout", self.dropout), ("stragglers", self.stragglers), ("links", self.links),
                              ("corrupt", self.corrupt)):
            for n, entry in enumerate(entries):
                if entry.end is not None and entry.end < entry.start:
                    raise ConfigError(f"config key 'faults.{name}[{n}].end' is {entry.end}, before its start "
                                      f"{entry.start}; give end >= start (or null: to the end of the run)")
        for n, a in enumerate(self.corrupt):
            for m, b in enumerate(self.corrupt[:n]):
                if a.silo == b.silo and _overlap(a, b):
                    raise ConfigError(f"faults.corrupt[{m}] and faults.corrupt[{n}] both corrupt silo {a.silo} in "
                                      f"round {max(a.start, b.start)}; give one silo's windows without overlap")
        if self.past_deadline == "partial" and self.deadline is None:
            raise ConfigError("faults.past_deadline: partial cuts a straggler's local steps at faults.deadline, "
                              "which is null; give faults.deadline (e.g. 1.0) or use past_deadline: drop")
        if self.participants is not None and self.participation < 1:
            raise ConfigError(f"faults.participation {self.participation:g} and faults.participants "
                              f"{self.participants} are both set; give one of them")

    @property
    def active(self) -> bool:
        """Whether anything is simulated (a run without faults takes the plain path)."""
        return bool(self.dropout or self.stragglers or self.links or self.participants is not None
                    or self.participation < 1)


def _overlap(a: Any, b: Any) -> bool:
    """Whether two windows (start..end, end None: open) share a round."""
    return (a.end is None or b.start <= a.end) and (b.end is None or a.start <= b.end)
