"""What one rank holds during a run: its silos (model, optimiser, data stream) and the helpers
algorithms use — membership of the round, local training, silo-to-silo exchange, aggregation, the
server. The data come from :mod:`fedsim.data.rank`, the models from
:func:`fedsim.models.initial_model_factory`; scoring them is :mod:`fedsim.evaluation`'s job.

Nothing here depends on how silos are spread over ranks: each silo draws its mini-batches from
its own seeded generator, so the same config gives the same numbers on 1, 2 or N ranks.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedsim.aggregation import Aggregation, unflatten
from fedsim.compression import LinkCoder, ServerCoder, build_codec, wire_bytes
from fedsim.config import ExperimentConfig
from fedsim.data.rank import BatchStream, RankData, silo_seed
from fedsim.distributed import Placement
from fedsim.faults import noisy_message
from fedsim.losses import segmentation_loss
from fedsim.netmodel import multigraph_active_arcs
from fedsim.netmodel.overlays import matcha_active_arcs
from fedsim.optim import make_optimizer
from fedsim.privacy import PrivacyPlan, build_privacy
from fedsim.topology import Topology
from fedsim.transport import (
    SERVER,
    Key,
    Transport,
    flatten_state,
    gather_states,
    message_bytes,
    weighted_average,
)


@dataclass
class Silo:
    """One participant on this rank."""

    id: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: Any  # fedsim.data.SiloDataset
    batches: BatchStream
    status: int = 1  # ϑ_i: 1 when the silo contributes to the foundation model


def state_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The model's full state (parameters and buffers) in a fixed order."""
    return list(model.state_dict().values())


def load_state_tensors(model: nn.Module, tensors: Iterable[torch.Tensor]) -> None:
    with torch.no_grad():
        for dst, src in zip(model.state_dict().values(), tensors, strict=True):
            dst.copy_(src)


def train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: BatchStream,
    steps: int,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """``steps`` SGD steps on mini-batches from ``batches``; returns the mean loss."""
    model.train()
    total, counted = 0.0, 0
    for _ in range(steps):
        x, y = batches.next()
        if x.shape[0] == 0:  # a Poisson draw with no sample (DP-SGD): the step is noise only
            optimizer.empty_step()
            continue
        loss = loss_fn(model, x, y) if loss_fn else F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
        counted += 1
    # the gradients are not needed until the next round's first backward, which starts from None
    # anyway: freeing them keeps a model's worth of memory per silo off the rank between rounds
    optimizer.zero_grad(set_to_none=True)
    return total / max(counted, 1)


def segmentation_step_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A silo's local loss in ``task: segmentation`` runs (cross-entropy + soft Dice)."""
    return segmentation_loss(model(x), y)


class Federation:
    """The silos on this rank plus everything an algorithm may ask for."""

    #: the rank that hosts the data-less CFL server's own computations
    SERVER_RANK = 0

    def __init__(self, cfg: ExperimentConfig, scenario, topology: Topology, placement: Placement, rank: int,
                 device: torch.device, data: RankData, model_factory: Callable[[int | None], nn.Module],
                 privacy: PrivacyPlan | None = None) -> None:
        """``cfg``: the run's config (algorithms read it through :attr:`cfg`); ``scenario``,
        ``topology`` (the graph silos train on), ``placement`` and ``privacy`` (the resolved
        privacy plan; None: off): the run as :class:`fedsim.plan.RunPlan` resolved it; ``data``:
        this rank's silos' data; ``model_factory``: a silo's initial model. Built by
        :func:`fedsim.trainer.build_federation`."""
        self.cfg: ExperimentConfig = cfg
        self.scenario = scenario  # fedsim.plan.Scenario: what algorithms may ask about it
        self.topology: Topology = topology
        self.rank = rank
        self.world_size = placement.world_size
        self.device = device
        self.placement = placement
        self.num_classes = data.num_classes
        self.model_factory = model_factory
        self.segmentation = self.cfg.task == "segmentation"
        #: the local training loss (None: cross-entropy on the labels)
        self.loss_fn = segmentation_step_loss if self.segmentation else None
        target = "masks" if self.segmentation else "labels"
        cfg = self.cfg
        local = self.placement.silos_on(rank)
        #: gradient steps each local silo's compute did since the last take (its own training,
        #: the visitors it hosted, distillation): the cost column of the paper tables
        self.grad_steps: Counter[int] = Counter()
        #: seconds spent in messages and collectives (exchange, aggregate, the server's broadcast)
        #: since the last :meth:`take_exchange_seconds`: the round's "exchange" share
        self.exchange_seconds = 0.0
        #: how the server, Θ and DFL mixes combine weights (``aggregation:``, :mod:`fedsim.aggregation`)
        self.aggregation = Aggregation.of(cfg)
        self._build_codec()

        #: differential privacy (``privacy.mode``): DP-SGD sessions, the accountants, ε per silo
        self.privacy = build_privacy(privacy, self)
        # ϑ_i: a pooled (CLL) silo always contributes
        status = [1] if scenario.pooled else (cfg.accumulation_status or [1] * self.topology.num_silos)
        #: every silo this rank hosts; :attr:`silos` is those of them taking part in the round
        self.hosted: dict[int, Silo] = {}
        #: the silos of every rank taking part in the current round (fedsim.faults), and the arcs
        #: that are down in it
        self.present: frozenset[int] = frozenset(range(self.topology.num_silos))
        self.down_arcs: frozenset[tuple[int, int]] = frozenset()
        #: the current round, the silos whose messages carry noise in it (``faults.corrupt``
        #: weight_noise: silo → standard deviation) and the sends so far in it (each exchange or
        #: upload is one, on every rank: the noise stream of a message)
        self.round = 0
        self.weight_noise: dict[int, float] = {}
        self._sends = 0
        #: silos (of every rank) that finish only part of their local steps this round (a
        #: straggler cut at the deadline, ``faults.past_deadline: partial``) → those steps
        self._cut_steps: dict[int, int] = {}
        for i in local:
            model = self.new_model(i)
            self.hosted[i] = Silo(
                id=i,
                model=model,
                optimizer=make_optimizer(model, cfg),
                data=data.train[i],
                batches=self.privacy.batch_stream(i, data.train[i], cfg.train.batch_size, silo_seed(cfg.seed, i),
                                                  device, target),
                status=status[i],
            )

    def _build_codec(self) -> None:
        """The transport, with the codec of ``compression.kind`` on silo-to-silo links and on the
        server path (:mod:`fedsim.compression`)."""
        cfg = self.cfg
        #: the compression codec (None: messages travel as they are)
        self.codec = build_codec(cfg.compression)
        #: the run's common initial model: the first reference of coded messages and of the
        #: server's Θ̂ (kept only when compression or client-level DP needs it)
        self.initial_state = None
        if self.codec is not None or cfg.privacy.mode == "client":
            self.initial_state = [t.detach().clone() for t in state_tensors(self.new_model())]
        coder, self.server_coder = None, None
        if self.codec is not None:
            coder = LinkCoder(self.codec, cfg.compression.error_feedback, self.initial_state)
            self.server_coder = ServerCoder(self.codec, cfg.compression.error_feedback)
        self.transport = Transport(self.placement, self.rank, self.device, coder)
        #: Θ̂, the model every silo took from the server last (server path with a codec or client DP)
        self.server_reference = self.initial_state

    @property
    def silos(self) -> dict[int, Silo]:
        """This rank's silos that take part in the current round — all of them unless
        ``faults:`` leaves some out. Algorithms see only these: an absent silo does not train,
        send or receive, and weighs nothing in an aggregate."""
        if len(self.present) == self.topology.num_silos:
            return self.hosted
        return {i: s for i, s in self.hosted.items() if i in self.present}

    @property
    def local_ids(self) -> list[int]:
        """Every silo this rank hosts, present or not."""
        return sorted(self.hosted)

    def begin_round(self, present: frozenset[int], down_arcs: frozenset[tuple[int, int]] = frozenset(),
                    k: int = 0, weight_noise: dict[int, float] | None = None,
                    local_steps: dict[int, int] | None = None) -> None:
        """Round ``k``'s participants (over every rank), the arcs that are down in it, the silos
        that send noised weights in it (silo → the noise's standard deviation) and those that
        finish only part of their local steps (silo → steps)."""
        self.present = frozenset(present)
        self.down_arcs = frozenset(down_arcs)
        self.round = k
        self.weight_noise = dict(weight_noise or {})
        self._cut_steps = dict(local_steps or {})
        self._sends = 0

    def local_steps(self, silo: int) -> int:
        """τ_i, the local steps silo ``silo`` (of any rank) takes on its own data this round:
        ``train.local_steps``, fewer for a straggler stopped at the deadline (``fedsim.faults``)."""
        return self._cut_steps.get(silo, self.cfg.train.local_steps)

    def _next_send(self) -> int:
        """The index of this send in the round (every rank counts every exchange and upload)."""
        self._sends += 1
        return self._sends - 1

    def _as_sent(self, src: int, dst: int, tensors: list[torch.Tensor], send: int) -> list[torch.Tensor]:
        """``tensors`` as silo ``src`` sends them to ``dst`` (``SERVER``: the CFL server) in this
        round's ``send``-th send: with the noise of ``faults.corrupt`` weight_noise when ``src``
        sends noised weights now (:func:`fedsim.faults.noisy_message`), else as they are."""
        std = self.weight_noise.get(src)
        if std is None:
            return tensors
        return noisy_message(tensors, std, self.cfg.seed, self.round, send, src, dst)

    def rejoin_from_theta(self, silos: list[int], over: frozenset[int]) -> None:
        """``silos`` (of every rank) come back with Θ of the silos in ``over`` (a collective)."""
        theta = self.aggregate(over=over)
        for i in silos:
            if i in self.hosted:
                load_state_tensors(self.hosted[i].model, theta)

    def new_model(self, silo: int | None = None) -> nn.Module:
        """A fresh model with the run's common initialisation (the same on every silo that has
        the architecture); ``silo`` picks the architecture when models are heterogeneous."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            model = self.model_factory(silo)
        return flatten_state(model.to(self.device))

    def scratch_model(self) -> nn.Module:
        """A model to load any state into (kept, so evaluation does not rebuild one per round)."""
        if not hasattr(self, "_scratch"):
            self._scratch = self.new_model()
        return self._scratch

    def train(self, model: nn.Module, optimizer: torch.optim.Optimizer, owner: int, steps: int,
              loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> float:
        """``steps`` steps of ``model`` on silo ``owner``'s data (its own model, or a visitor it
        hosts); with ``privacy.mode: sample`` they are DP-SGD steps on ``owner``'s budget. Returns
        the mean loss."""
        with self.privacy.session(model, optimizer, owner) as opt:
            return train_steps(model, opt, self.silos[owner].batches, steps, loss_fn)

    def private_steps(self, model: nn.Module, optimizer: torch.optim.Optimizer, owner: int):
        """A context giving the optimizer for a custom loop of steps on silo ``owner``'s data
        (DP-SGD's under ``privacy.mode: sample``; batches may then be empty, see ``train_steps``)."""
        return self.privacy.session(model, optimizer, owner)

    def exchange(
        self, arcs: Iterable[Key], payload: Callable[[int, int], list[torch.Tensor]], channel: str = "model",
        rider: Callable[[int, int], list[torch.Tensor]] | None = None, rider_template: list[torch.Tensor] | None = None,
    ) -> dict[Key, list[torch.Tensor]]:
        """Send ``payload(src, dst)`` along every arc (the same global list on every rank) and
        return the messages this rank's silos receive, keyed by (src, dst). ``channel`` names what
        travels (a link's coded messages are deltas of earlier ones on the same channel). A
        ``faults.corrupt`` weight_noise sender's floating-point tensors arrive noised (its own stay
        clean); each call is one send of the round for the noise's seed stream.

        ``rider(src, dst)``: tensors shaped like ``rider_template`` that travel in the same message
        after the model (a visiting model's optimiser state, :mod:`fedsim.optim`); they are counted
        in its bytes, never noised (the corruption noises weights) and cannot be coded (compression
        codes model-shaped messages; the config check refuses the combination). A received message
        is then the model's tensors followed by the rider's."""
        arcs = list(arcs)
        template = self.state_template()
        present = self.silos
        send = self._next_send()
        outgoing = {(s, d): self._as_sent(s, d, payload(s, d), send) for s, d in arcs if s in present}
        if rider is not None:
            template = template + list(rider_template or [])
            outgoing = {(s, d): [*msg, *rider(s, d)] for (s, d), msg in outgoing.items()}
        incoming = {(s, d): template for s, d in arcs if d in present}
        t0 = time.perf_counter()
        try:
            return self.transport.exchange(outgoing, incoming, channel)
        finally:
            self.exchange_seconds += time.perf_counter() - t0

    def active_arcs(self, k: int) -> list[Key]:
        """The arcs that exchange in round ``k``: all of them, except on a multigraph overlay
        (the round's state leaves weak arcs idle) and a MATCHA overlay (random matchings), and
        except arcs that are down or touch an absent silo (``faults:``)."""
        topo = self.topology
        if any("parallel" in e.extra for e in topo.edges):
            arcs = sorted(multigraph_active_arcs(topo, k))
        elif "matching_probabilities" in topo.extra:
            arcs = sorted(matcha_active_arcs(topo, k, seed=self.cfg.seed))
        else:
            arcs = topo.arcs
        if self.down_arcs or len(self.present) < topo.num_silos:
            arcs = [(j, i) for j, i in arcs if j in self.present and i in self.present
                    and (j, i) not in self.down_arcs]
        return arcs

    def silo_weights(self, over: frozenset[int] | None = None) -> dict[int, float]:
        """ϑ_i n_i of this rank's silos present in the round (or in ``over``), n_i = 1 unless
        weight_by_samples: each one's share of Θ; absent silos are not listed (weight 0)."""
        silos = self.silos if over is None else {i: s for i, s in self.hosted.items() if i in over}
        return {i: s.status * (len(s.data) if self.cfg.weight_by_samples else 1.0) for i, s in silos.items()}

    def aggregate(self, over: frozenset[int] | None = None) -> list[torch.Tensor]:
        """Θ = Σ ϑ_i n_i θ_i / Σ ϑ_i n_i over every present silo of every rank (or those in
        ``over``); n_i = 1 unless weight_by_samples. A collective: every rank calls it. It reads
        the silos' own models (the Θ scored and saved), not a message: a ``weight_noise`` silo's
        noise is on what it sends (:meth:`exchange`, :meth:`upload_to_server`), not here. Under a
        robust ``aggregation:`` the rule over the same silos and weights (:mod:`fedsim.aggregation`)."""
        weights = self.silo_weights(over)
        return self._average({i: state_tensors(self.hosted[i].model) for i in weights}, weights)

    def _average(self, states: dict[int, list[torch.Tensor]], weights: dict[int, float]) -> list[torch.Tensor]:
        """The weighted all-reduce of ``states`` (this rank's) over every rank — or, under a robust
        ``aggregation:``, that rule over every rank's states — timed as exchange."""
        t0 = time.perf_counter()
        try:
            if not self.aggregation.is_mean:
                return self._robust(states, weights)
            return weighted_average(states, weights, self.device, template=self.state_template())
        finally:
            self.exchange_seconds += time.perf_counter() - t0

    def _robust(self, states: dict[int, list[torch.Tensor]], weights: dict[int, float]) -> list[torch.Tensor]:
        """The ``aggregation:`` rule over every rank's ``states``: each rank gathers them all (one
        all-gather) and computes the same rule on the same rows, in silo order."""
        template = self.state_template()
        slots = max(len(self.placement.silos_on(r)) for r in range(self.world_size))
        _ids, w, rows = gather_states(states, weights, self.device, template, slots)
        return unflatten(self.aggregation.combine_rows(rows, w), template)

    def state_template(self) -> list[torch.Tensor]:
        """Tensors shaped like one silo's state (for collectives on a rank with no silo present)."""
        return state_tensors(next(iter(self.hosted.values())).model)

    def upload_to_server(self, k: int, states: dict[int, list[torch.Tensor]] | None = None) -> list[torch.Tensor]:
        """CFL, up: every silo sends the server its model (or ``states[i]``, what the algorithm
        has silo i send in its place, shaped like it); returns the server's Θ (the same on every
        rank) and books the uploads.

        Plain: Θ = Σ ϑ_i n_i θ_i / Σ ϑ_i n_i, each θ_i as the silo sends it (noised when it is a
        ``faults.corrupt`` weight_noise silo in the round). With a codec or client-level DP each silo sends its
        update Δ_i = θ_i − Θ̂ against the Θ̂ it started from — coded (``compression``), then clipped
        (``privacy.mode: client``) — and Θ = Θ̂ + the weighted mean of what the server decoded (plus
        the server's noise under client-level DP). Under a robust ``aggregation:`` the server combines
        the same states (or updates) with that rule instead of the mean."""
        client_dp = self.privacy.mode == "client"
        send = self._next_send()
        def sent(i: int) -> list[torch.Tensor]:
            own = states[i] if states is not None else state_tensors(self.hosted[i].model)
            return self._as_sent(i, SERVER, own, send)

        if self.server_coder is None and not client_dp:
            weights = self.silo_weights()
            theta = self._average({i: sent(i) for i in weights}, weights)
            size = message_bytes(theta)
            for i in self.silos:
                self.transport.book_server(i, up=size, down=0)
            return theta
        base = self.server_reference
        updates = {}
        for i in sorted(self.silos):
            state = sent(i)
            update = [t.detach() - b if t.is_floating_point() else t.detach() for t, b in zip(state, base)]
            if self.server_coder is not None:
                update, size = self.server_coder.upload(i, update)
            else:
                size = message_bytes(state)
            if client_dp:
                update = self.privacy.clip(i, update)
            updates[i] = update
            self.transport.book_server(i, up=size, down=0)
        # a rank with no silo present in the round still joins the collective with a template
        if self.aggregation.is_mean:
            mean = weighted_average(updates, self.silo_weights(), self.device, template=self.state_template())
        else:  # the rule over the updates: the same as over the states (every rule commutes with a shift)
            mean = self._robust(updates, self.silo_weights())
        if client_dp:  # noise calibrated to the silos that took part in this round
            mean = self.privacy.noise(mean, k, self.present)
        return [b + m if b.is_floating_point() else m for b, m in zip(base, mean)]

    def download_from_server(self, theta: list[torch.Tensor]) -> list[torch.Tensor]:
        """CFL, down: the server sends Θ to every silo; returns Θ as the silos receive it (decoded,
        with a codec) and books the downloads."""
        if self.server_coder is None:
            received, size = theta, message_bytes(theta)
        else:
            base = self.server_reference
            change = [t - b if t.is_floating_point() else t for t, b in zip(theta, base)]
            decoded, size = self.server_coder.download(change)
            received = [b + d if b.is_floating_point() else d for b, d in zip(base, decoded)]
        if self.server_reference is not None:
            self.server_reference = [t.detach().clone() for t in received]
        for i in self.silos:
            self.transport.book_server(i, up=0, down=size)
        return received

    def server_round(self, k: int) -> list[torch.Tensor]:
        """CFL's exchange with the data-less server in round ``k``: up, Θ, down (bytes booked on
        the star through the server); returns Θ as every silo receives it."""
        return self.download_from_server(self.upload_to_server(k))

    def wire_ratio(self) -> float:
        """Bytes of a coded model message over its raw bytes (1 without compression): what the
        simulated clock scales the message size M by."""
        if self.codec is None:
            return 1.0
        template = self.state_template()
        return wire_bytes(self.codec, template) / message_bytes(template)

    def silo_state(self, i: int) -> dict[str, Any]:
        """What silo i's checkpoint keeps beyond its model: privacy accountant and noise stream,
        the codec's link references and residuals, the server's Θ̂."""
        state: dict[str, Any] = {"privacy": self.privacy.silo_state(i)}
        if self.transport.coder is not None:
            state["links"] = self.transport.coder.silo_state(i)
            state["server_coder"] = self.server_coder.silo_state(i)
        if self.server_reference is not None:
            state["server_reference"] = self.server_reference
        return state

    def load_silo_state(self, i: int, state: dict[str, Any]) -> None:
        self.privacy.load_silo_state(i, state.get("privacy", {}))
        if self.transport.coder is not None and "links" in state:
            self.transport.coder.load_silo_state(state["links"], self.device)
            self.server_coder.load_silo_state(i, state["server_coder"], self.device)
        if state.get("server_reference") is not None:
            self.server_reference = [t.to(self.device) for t in state["server_reference"]]

    def on_server(self, compute: Callable[[], list[torch.Tensor]], template: list[torch.Tensor]) -> list[torch.Tensor]:
        """``compute()`` run once, by the server, and its tensors (shaped like ``template``)
        delivered to every rank."""
        out = compute() if self.rank == self.SERVER_RANK else template
        t0 = time.perf_counter()
        try:
            return self.transport.broadcast(out, src_rank=self.SERVER_RANK)
        finally:
            self.exchange_seconds += time.perf_counter() - t0

    def charge(self, silo: int, steps: int) -> None:
        """Book ``steps`` gradient steps to the silo whose compute ran them."""
        self.grad_steps[silo] += steps

    def take_exchange_seconds(self) -> float:
        out, self.exchange_seconds = self.exchange_seconds, 0.0
        return out

    def take_grad_steps(self) -> dict[int, int]:
        out = {i: self.grad_steps.get(i, 0) for i in self.hosted}
        self.grad_steps.clear()
        return out


