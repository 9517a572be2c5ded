"""What every algorithm provides to the runner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedsim.algorithms import algorithm_settings
from fedsim.config import TrainConfig
from fedsim.federation import Federation, Silo


class Algorithm:
    """One round of a federated algorithm, written against silos, never ranks."""

    name = ""
    title = ""  # how tables and plots name it
    #: the scenario the algorithm is defined for, used when the config leaves it unset
    natural_scenario = "dfl"
    #: scenarios it can run in besides the natural one
    scenarios: tuple[str, ...] = ("dfl", "cll", "standalone")

    #: a plug-in's settings dataclass, filled from the config's ``algorithm_args:`` and checked as
    #: any config key (built-ins name theirs in ``fedsim.algorithms.REGISTRY``: a ``NAME:`` section)
    Settings: type | None = None

    def __init__(self, fed: Federation) -> None:
        """What an algorithm receives: the rank's federation (its silos, exchanges, aggregation,
        the scenario and graph) and, of the run's config, its own section (:attr:`settings`),
        ``train:`` (:attr:`train`) and the seed (:attr:`seed`). Built-ins read the whole
        :attr:`cfg` only to build optimisers (:func:`fedsim.optim.make_optimizer` takes it), for
        the public set's ``data:`` section and FedEFM's ``emd:`` (``self.emd``)."""
        self.fed = fed
        #: the run's settings of this algorithm (a plug-in's ``Settings`` filled from algorithm_args,
        #: a built-in's config section), or None
        self.settings = algorithm_settings(fed.cfg)
        #: the ``train:`` section: local steps, batch size, learning rate, optimiser
        self.train: TrainConfig = fed.cfg.train
        #: the run's seed (every random draw of the run derives from it)
        self.seed: int = fed.cfg.seed
        #: the whole config, for what has no section of its own (kept for plug-ins; prefer the above)
        self.cfg = fed.cfg

    #: whether the algorithm sends or averages model weights (then every silo needs the same
    #: architecture); algorithms that exchange only outputs on a public set set this False
    shares_weights = True

    #: whether it reads the model's dense feature map (``fedsim.models.features_of``), which a
    #: plug-in model must then provide
    needs_features = False

    @classmethod
    def feature_grid(cls, cfg) -> int | None:
        """The side of the grid it pools a model's dense feature map to (``emd.grid`` for EMD
        weights), which the feature map must reach: checked before the run for a built-in model
        and on the first rank for a plug-in. None (the default): no such need."""
        return None

    #: the tasks (``task:``) it can train; its local loss must fit them
    tasks: tuple[str, ...] = ("classification",)

    def message_bits(self) -> float | None:
        """Bits of one message on an arc, for the simulated network clock; None: one model."""
        return None

    def message_factor(self) -> float:
        """How many model copies one message on an arc weighs for the simulated clock: 1, more
        when a model travels with its optimiser state (``expert_optimizer: travels``)."""
        return 1.0

    def request_factor(self) -> float:
        """For a round trip, the outgoing leg's weight in model copies (default: a message's)."""
        return self.message_factor()

    #: an exchange is a round trip (out to the in-neighbour and back), for the simulated clock
    round_trip = False

    #: ``privacy.mode`` values it supports besides none: ``sample`` (DP-SGD on every step that
    #: reads a silo's data; its losses must be means of per-sample terms) and ``client`` (DP-FedAvg
    #: on what the server averages); ``privacy_note`` says why a mode is missing
    privacy_modes: tuple[str, ...] = ("sample",)
    privacy_note = ""

    @classmethod
    def private_steps(cls, cfg, scenario, graph, silo: int, k: int) -> int:
        """Gradient steps that read silo ``silo``'s own training data in round ``k`` — what its
        DP-SGD accountant composes (planned before the run, to find σ for a target ε; an upper
        bound where arcs may idle). Default: its local steps."""
        return cfg.train.local_steps

    @classmethod
    def check(cls, cfg) -> None:
        """Refuse, with one line (a ``ConfigError``), settings the algorithm is not defined for —
        called in the plan, before any rank starts. Default: none."""

    @classmethod
    def mix_inputs(cls, cfg, scenario, graph, silo: int) -> int | None:
        """How many models silo ``silo``'s DFL mix combines when every arc is up (itself and the
        neighbours it mixes with), for the check of ``aggregation: krum`` before the run; None:
        the algorithm does not mix models along the topology in this scenario."""
        return None

    @property
    def exchanges(self) -> bool:
        """False when silos never talk (standalone, or CLL's single pooled silo)."""
        return self.fed.scenario.exchanges

    def exchanges_in(self, k: int) -> bool:
        """Whether round ``k`` sends anything (the simulated clock charges the network only then)."""
        return self.exchanges

    def local_loss(self, i: int, silo: Silo) -> Callable | None:
        """The loss ``(model, x, y) -> loss`` of silo i's local steps, asked for just before the
        silo trains (None: cross-entropy on the labels); algorithms with their own local
        objective override it."""
        return self.fed.loss_fn

    def local_training(self, steps: int | None = None) -> dict[int, float]:
        """Every local silo trains its own model on its own data — ``steps``, by default τ_i
        (``fed.local_steps``: ``train.local_steps``, fewer for a straggler the deadline stopped);
        mean loss per silo."""
        losses = {}
        for i, s in sorted(self.fed.silos.items()):
            n = self.fed.local_steps(i) if steps is None else steps
            losses[i] = self.fed.train(s.model, s.optimizer, i, n, self.local_loss(i, s))
            self.fed.charge(i, n)
        return losses

    def round(self, k: int) -> dict[int, float]:
        """Run round ``k`` on this rank's silos; return each local silo's mean training loss."""
        raise NotImplementedError

    def round_record(self, i: int) -> dict[str, Any]:
        """Algorithm-specific keys for local silo ``i``'s metric record of the round just run
        (merged into ``metrics/silo_<i>.jsonl``; JSON values). Default: none."""
        return {}

    def silo_state(self, i: int) -> dict[str, Any]:
        """Algorithm state kept for local silo ``i`` beyond its model (saved in its checkpoint)."""
        return {}

    def load_silo_state(self, i: int, state: dict[str, Any]) -> None:
        pass
