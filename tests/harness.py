"""What many tests share, and none of it starts a process: tiny run settings, the single-process
sequential references the distributed runs are checked against, and comparisons of model states."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fedsim.algorithms.public import PUBLIC_STREAM
from fedsim.cli import main
from fedsim.config import load_config
from fedsim.config.downstream import DownstreamConfig
from fedsim.data import derive_seed, load_federated, load_public
from fedsim.data.rank import BatchStream, silo_seed
from fedsim.emd import emd_similarity
from fedsim.federation import train_steps
from fedsim.models import ModelConfig, build_model
from fedsim.optim import make_optimizer
from fedsim.topology import resolve_topology

#: the repository's root
REPO = Path(__file__).resolve().parents[1]

#: a run small enough for a test: 2 rounds of 2 steps on 32 images per silo
TINY = [
    "rounds=2", "train.local_steps=2", "train.batch_size=8", "train.eval_every=0",
    "data.samples_per_silo=32", "data.test_samples=16", "data.image_size=16", "model.width=4",
]
#: the same through ``fedsim run --set``: gossip, no comparison runs, no downstream stage
CLI_TINY = ["rounds=2", "train.local_steps=2", "train.batch_size=8", "data.samples_per_silo=32",
            "data.test_samples=16", "data.image_size=16", "model.width=4", "algorithm=gossip",
            "compare_with=[]", "downstream.enabled=false"]

#: FedEFM on the ring, two overseas and two distillation steps, a 2×2 EMD grid
EFM = ["algorithm=fedefm", "topology=ring-4", "fedefm.overseas_steps=2", "fedefm.distill_steps=2",
       "emd.grid=2"]

#: the downstream tests' model and segmentation image size (:mod:`fedsim.downstream`)
DOWNSTREAM_MODEL = ModelConfig(width=8)
DOWNSTREAM_SIZE = 32

#: :class:`Released`'s learning rate unless one is given
LR = 1e-3


def sets(items: list[str]) -> list[str]:
    """Overrides as ``fedsim run`` arguments."""
    return [f"--set={s}" for s in items]


def tiny_downstream(**kw) -> DownstreamConfig:
    """Downstream settings small enough for a test (one fine-tune seed, in this process); ``kw``
    overrides."""
    base = dict(train_samples=16, test_samples=8, steps=3, batch_size=4, lr=3e-3, seeds=[0],
                seg_train_samples=8, seg_batch_size=4, seg_warmup_steps=2, seg_steps=2, workers=1,
                seg_image_size=None)
    base.update(kw)
    return DownstreamConfig(**base)


def foundation_state() -> dict:
    """A foundation state dict (6-class build_model) where every tensor differs from any fresh
    init (norm weights/biases too: noise is added to all of them)."""
    torch.manual_seed(1234)
    sd = build_model(DOWNSTREAM_MODEL, num_classes=6).state_dict()
    return {k: v + 0.1 * torch.randn(v.shape) if v.is_floating_point() else v.clone() for k, v in sd.items()}


def sequential_setup(overrides: list[str]):
    """Every silo's model, optimiser and batch stream of a :data:`TINY` run, built as the ranks build
    them, in this process: the start of every sequential re-computation."""
    torch.set_num_threads(1)  # as each spawned rank (2 cores, 2 ranks)
    cfg = load_config(None, TINY + overrides)
    topo = resolve_topology(cfg.topology)
    data = load_federated(cfg.data, topo.num_silos, cfg.seed)
    models, opts, streams = [], [], []
    for i in range(topo.num_silos):
        torch.manual_seed(cfg.seed)
        m = build_model(cfg.model, data.num_classes)
        models.append(m)
        opts.append(make_optimizer(m, cfg))
        streams.append(BatchStream(data.train[i], cfg.train.batch_size, silo_seed(cfg.seed, i), torch.device("cpu")))
    return cfg, topo, models, opts, streams


def flat(model) -> torch.Tensor:
    """A model's floating-point state as one float64 vector (state-dict order)."""
    return torch.cat([t.detach().double().reshape(-1) for t in model.state_dict().values() if t.is_floating_point()])


def assign(model, vector: torch.Tensor) -> None:
    """The inverse of :func:`flat`: write ``vector`` into the model's floating-point state."""
    offset = 0
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(vector[offset : offset + t.numel()].view(t.shape))
                offset += t.numel()


def average_states(models, weights):
    """Σ_k w_k θ_k over the state dicts, in float64."""
    keys = models[0].state_dict().keys()
    return {key: sum(w * m.state_dict()[key].double() for m, w in zip(models, weights)).float() for key in keys}


def load_all(models, theta) -> None:
    for m in models:
        with torch.no_grad():
            for dst, src in zip(m.state_dict().values(), theta):
                dst.copy_(src)


def mean_of(tensors: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """The uniform mean of several states, summed in float64 (as a server would sum them)."""
    return [torch.stack([t[n].double() for t in tensors]).mean(0).float() for n in range(len(tensors[0]))]


def models_of(states) -> dict[int, list[torch.Tensor]]:
    return {i: list(s["model"].values()) for i, s in states.items()}


def int8(t: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 quantisation of one tensor and back: s = max|t| / 127, round(t / s) · s."""
    s = t.abs().max() / 127.0
    return t.clone() if s == 0 else torch.round(t / s).clamp(-127, 127) * s


def kl_t2(student_logits, teacher_logits, T):
    """T² · KL(p_T ‖ p_S), written out: Σ_c p_T (log p_T − log p_S), averaged over the batch.
    In log space (p_T = exp(log p_T)): near convergence the gradient is a difference of nearly
    equal probabilities, and Adam turns its last-bit rounding into visible steps, so the reference
    must round the way a stable implementation does."""
    log_p = torch.log_softmax(teacher_logits / T, dim=1)
    log_q = torch.log_softmax(student_logits / T, dim=1)
    return T * T * (log_p.exp() * (log_p - log_q)).sum(1).mean()


def train_ce(model, opt, stream, steps):
    for _ in range(steps):
        x, y = stream.next()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def fedavg_rounds_reference(overrides: list[str], loss_for_silo) -> list:
    """FedAvg rounds computed sequentially with a custom local loss: ``loss_for_silo(i, round,
    model, x, y)`` is the loss of silo i at a step; returns the final models."""
    cfg, topo, models, opts, streams = sequential_setup(overrides)
    for k in range(cfg.rounds):
        for i in range(topo.num_silos):
            train_steps(models[i], opts[i], streams[i], cfg.train.local_steps,
                        lambda m, x, y, i=i, k=k: loss_for_silo(i, k, m, x, y))
        mean = torch.stack([flat(m) for m in models]).mean(0)
        for m in models:
            assign(m, mean)
    return models


def fedefm_distill_reference(model, opt, stream, teachers, cfg):
    """``fedefm.distill_steps`` steps of eq. 2 at a home silo, written out: w_ij the batch-mean
    EMD similarity of the features (clamped at 0, normalised with ``emd.normalize``; 1 under
    ``emd.backend: uniform``), ℓ_ij = βT²·KL + (1 − β)·CE (eq. 11). Returns, per step, the
    similarities s_ij before the clamp (None under uniform), the weights w_ij and the loss parts
    Σ_j w_ij·βT²·KL_j and Σ_j w_ij·(1 − β)·CE."""
    T, beta = cfg.fedefm.temperature, cfg.fedefm.beta
    steps = []
    for _ in range(cfg.fedefm.distill_steps):
        x, y = stream.next()
        f_s = model.features(x)
        z_s = model.head(f_s)
        with torch.no_grad():
            outs = [(t.head(t.features(x)), t.features(x)) for t in teachers]
        if cfg.emd.backend == "uniform":
            s, w = None, torch.ones(len(teachers))
        else:
            s = torch.stack([emd_similarity(f_s, f_t, backend=cfg.emd.backend, grid=cfg.emd.grid).mean()
                             for _, f_t in outs])
            w = s.clamp_min(0)
        if cfg.emd.normalize:
            w = w / w.sum()
        p_t = [torch.softmax(z_t / T, 1) for z_t, _ in outs]
        kd = [(p * (p.log() - torch.log_softmax(z_s / T, 1))).sum(1).mean() for p in p_t]
        ce = F.cross_entropy(z_s, y)
        loss = sum(w[j] * (beta * T * T * kd[j] + (1 - beta) * ce) for j in range(len(teachers)))
        steps.append({
            "similarity": None if s is None else s.tolist(), "weights": w.tolist(), "loss": loss.item(),
            "kd_loss": sum(w[j].item() * beta * T * T * kd[j].item() for j in range(len(teachers))),
            "ce_loss": sum(w[j].item() * (1 - beta) * ce.item() for j in range(len(teachers))),
        })
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps


def public_batches(cfg, samples: int, steps: int, k: int) -> list[torch.Tensor]:
    """Round k's public batches: a permutation from derive_seed(seed, PUBLIC_STREAM, k), read in
    order and repeated when the steps need more samples than the set has. Images only."""
    images = load_public(cfg.data, samples, cfg.seed).images
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, PUBLIC_STREAM, k))
    perm = torch.randperm(len(images), generator=g)
    b = min(cfg.train.batch_size, len(images))
    order = perm.repeat(steps * b // len(images) + 1)
    return [images[order[s * b : (s + 1) * b]] for s in range(steps)]


class Released:
    """The released code's model object: a net, its AdamW and its LambdaLR (``models/med/vit.py``
    ``MedViT.__init__`` and ``fit_batch``), deep-copied whole when it travels."""

    def __init__(self, net: torch.nn.Module, kind: str = "adamw", lr: float = LR) -> None:
        self.net = net
        params = [p for p in net.parameters() if p.requires_grad]
        if kind == "adamw":  # the released code's optimiser, as it builds it
            self.optimizer = torch.optim.AdamW(params, lr=lr)
        elif kind == "adam":
            self.optimizer = torch.optim.Adam(params, lr=lr, weight_decay=0.01)
        else:
            self.optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=0.01)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda=lambda x: 1 / np.sqrt(x) if x > 0 else 1)

    def fit_batch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.zero_grad()
        F.cross_entropy(self.net(x), y).backward()
        self.step()

    # what a loop written against an optimiser calls: the step, then the scheduler's (``fit_batch``)
    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def step(self) -> None:
        self.optimizer.step()
        self.lr_scheduler.step()


def krum_by_definition(x: np.ndarray, f: int, m: int = 1, w: np.ndarray | None = None) -> np.ndarray:
    """Blanchard et al. 2017: score(i) = Σ of ‖x_i − x_j‖² over the n − f − 2 closest j ≠ i; Krum
    picks the lowest score, multi-Krum averages the m lowest (weighted by w)."""
    n = len(x)
    scores = []
    for i in range(n):
        d = sorted(float(((x[i] - x[j]) ** 2).sum()) for j in range(n) if j != i)
        scores.append(sum(d[: n - f - 2]))
    chosen = sorted(sorted(range(n), key=lambda i: (scores[i], i))[:m])
    w = np.ones(n) if w is None else w
    return (w[chosen, None] * x[chosen]).sum(0) / w[chosen].sum()


def soft_dice_reference(logits, y):
    """1 − mean over foreground classes c of (2 Σ p_c·[y=c] + 1) / (Σ p_c + Σ [y=c] + 1)."""
    p = logits.softmax(1)
    terms = []
    for c in range(1, logits.shape[1]):
        t = (y == c).to(p.dtype)
        terms.append((2 * (p[:, c] * t).sum() + 1) / (p[:, c].sum() + t.sum() + 1))
    return 1 - torch.stack(terms).mean()


def assert_same_models(got, models) -> None:
    for i, model in enumerate(models):
        for a, b in zip(got[i], model.state_dict().values()):
            if a.is_floating_point():
                torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def assert_models(got: dict[int, list[torch.Tensor]], models, atol: float = 1e-6) -> None:
    for i, model in enumerate(models):
        for a, b in zip(got[i], model.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, atol=atol, rtol=0)


def assert_models_close(got, models, outliers: int = 0):
    """Every weight within 1e-5 of the reference (with ``outliers``: see
    :func:`assert_close_up_to_adam_outliers`)."""
    for i, model in enumerate(models):
        for a, b in zip(got[i], model.state_dict().values()):
            if not a.is_floating_point():
                continue
            if outliers:
                assert_close_up_to_adam_outliers(a, b, outliers)
            else:
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def assert_close_up_to_adam_outliers(a: torch.Tensor, b: torch.Tensor, outliers: int = 1) -> None:
    """Every weight within 1e-5, except at most ``outliers`` of the tensor within 1e-3: two runs
    that sum the same gradients in another order (a sequential reference, Opacus' per-sample sums)
    differ by ~1e-9, and Adam's step g / (√v + ε) turns that into up to ~lr/2 for a weight whose
    gradient is itself ~1e-9 (one weight in a few thousand on the 8-bit synthetic data). A wrong
    schedule or update moves far more weights than that."""
    off = (a.double() - b.double()).abs()
    assert off.max() <= 1e-3 and int((off > 1e-5).sum()) <= outliers, (off.max().item(), int((off > 1e-5).sum()))


def assert_models_up_to_rounding_flips(got, models, steps: list[set[float]], atol: float) -> None:
    """``assert_models``, except where a value sat on an int8 rounding boundary (x/s = k + ½):
    a re-computation writes (say) the server's Adam step with other float operations than the run,
    and an ulp of difference there sends such a value to the other code, one code step s away
    (seen on one machine: 1 value of 2304 off by exactly that round's s, 3.5e-5). Those values
    must differ by one down code step s of their tensor, and be at most 1 in 1000 values."""
    flips = total = 0
    for i, model in enumerate(models):
        for n, (a, b) in enumerate(zip(got[i], model.state_dict().values(), strict=True)):
            total += a.numel()
            if not a.is_floating_point():
                assert torch.equal(a, b)
                continue
            d = (a.double() - b.double()).abs()
            off = d[d > atol]
            if off.numel():
                s = torch.tensor(sorted(steps[n]), dtype=torch.float64)
                one_step = (off[:, None] - s[None, :]).abs().min(1).values <= atol
                assert one_step.all(), f"model {i} tensor {n}: {off[~one_step].tolist()} is not one code step"
                flips += off.numel()
    assert flips <= total // 1000, f"{flips} values of {total} a code step off"


def assert_same_state(a, b, where: str) -> None:
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for n, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}/{n}")
    else:
        assert a == b, where


def reference_fedefm(overrides: list[str], scenario: str = "dfl", trace: dict | None = None,
                     travels: bool = False) -> list[torch.nn.Module]:
    """Eq. 1–3 and 11 in one process, written out directly, with the aggregation of
    ``fedefm.aggregate`` / ``fedefm.mix`` (CFL: a complete graph through the server). ``trace``
    receives, for each round k and silo i that distils, (its teachers, ``_distill``'s steps).
    ``travels``: every silo is the released code's model object (AdamW + LambdaLR sqrt,
    :class:`tests.harness.Released`) and a visitor is a deep copy of it, optimiser and all."""
    cfg, topo, models, opts, streams = sequential_setup(overrides)
    if travels:
        assert (cfg.train.optimizer, cfg.train.lr_schedule, cfg.train.weight_decay) == ("adamw", "sqrt", 0.01)
        opts = [Released(m, lr=cfg.train.lr) for m in models]  # opts[i].net is models[i]
    n = topo.num_silos
    s = cfg.fedefm.self_weight
    every_round = cfg.fedefm.aggregate == "round"
    if scenario == "cfl":
        in_nb = {i: [j for j in range(n) if j != i] for i in range(n)}
    else:
        in_nb = {i: sorted(topo.in_neighbours(i)) for i in range(n)}
    out_nb = {j: [i for i in range(n) if j in in_nb[i]] for j in range(n)}

    def restart_from_mean():
        theta = average_states(models, [1.0 / n] * n)
        for m in models:
            m.load_state_dict(theta)

    for k in range(cfg.rounds):
        if k == 0:
            for i in range(n):
                train_ce(models[i], opts[i], streams[i], cfg.train.local_steps)
            if scenario == "cfl" and every_round:
                restart_from_mean()
            continue
        # eq. 1: θ_i visits each in-neighbour j and trains there; host j serves visitors in id order
        experts = {}
        for j in range(n):
            for i in out_nb[j]:  # i with j ∈ N_in(i)
                if travels:  # θ_i with its optimiser and schedule; the expert is the copy's weights
                    twin = copy.deepcopy(opts[i])
                    visitor, optimizer = twin.net, twin
                else:
                    visitor = copy.deepcopy(models[i])
                    optimizer = make_optimizer(visitor, cfg)
                train_ce(visitor, optimizer, streams[j], cfg.fedefm.overseas_steps)
                experts[(j, i)] = visitor
        # eq. 2, 3, 11 at each home silo
        for i in range(n):
            steps = fedefm_distill_reference(models[i], opts[i], streams[i], [experts[(j, i)] for j in in_nb[i]], cfg)
            if trace is not None:
                trace[(k, i)] = (in_nb[i], steps)
        if not every_round:
            continue
        if scenario == "cfl":
            restart_from_mean()
            continue
        if cfg.fedefm.mix == "hosted":  # the visitors silo i hosted: its out-neighbours' models
            others = {i: [experts[(i, v)] for v in out_nb[i]] for i in range(n)}
        elif cfg.fedefm.mix == "experts":  # silo i's own experts, back from its in-neighbours
            others = {i: [experts[(j, i)] for j in in_nb[i]] for i in range(n)}
        else:
            others = None
        if others is not None:
            new = [average_states([models[i], *others[i]], [s] + [(1 - s) / len(others[i])] * len(others[i]))
                   for i in range(n)]
        else:  # Metropolis–Hastings with the in-neighbours' distilled models
            deg = {i: len(in_nb[i]) for i in range(n)}
            new = []
            for i in range(n):
                w = {j: 1.0 / (1 + max(deg[i], deg[j])) for j in in_nb[i]}
                new.append(average_states([models[i], *[models[j] for j in in_nb[i]]],
                                    [1 - sum(w.values()), *w.values()]))
        for m, state in zip(models, new):
            m.load_state_dict(state)
    return models


def scaffold_reference(overrides: list[str], absent: dict[int, set[int]] | None = None):
    """Algorithm 1 with option II, sequentially: (final models, each silo's c_i). ``absent``:
    round → silos sitting it out (they keep model and c_i, and rejoin from x)."""
    cfg, topo, models, opts, streams = sequential_setup(overrides)
    n, K, lr, eta_g = topo.num_silos, cfg.train.local_steps, cfg.train.lr, cfg.scaffold.server_lr
    x = [t.detach().clone() for t in models[0].state_dict().values()]  # the cnn's state: parameters only
    c = [torch.zeros_like(t) for t in x]
    c_i = {i: [torch.zeros_like(t) for t in x] for i in range(n)}
    absent = absent or {}
    for k in range(cfg.rounds):
        S = [i for i in range(n) if i not in absent.get(k, set())]
        for i in S:
            if i in absent.get(k - 1, set()):  # back: from the server's x
                load_all([models[i]], x)
        delta_c = []
        for i in S:
            model, params = models[i], list(models[i].parameters())
            for _ in range(K):  # y_i ← y_i − η_l (g_i(y_i) − c_i + c)
                xb, yb = streams[i].next()
                loss = F.cross_entropy(model(xb), yb)
                opts[i].zero_grad()
                loss.backward()
                for p, cc, ci in zip(params, c, c_i[i]):
                    p.grad.add_(cc - ci)
                opts[i].step()
            y = [t.detach() for t in model.state_dict().values()]
            new = [ci - cc + (xx - yy) / (K * lr) for ci, cc, xx, yy in zip(c_i[i], c, x, y)]  # option II
            delta_c.append([a - b for a, b in zip(new, c_i[i])])
            c_i[i] = new
        mean = mean_of([list(models[i].state_dict().values()) for i in S])
        x = [xx + eta_g * (m - xx) for xx, m in zip(x, mean)]  # x + η_g · mean Δy_i
        c = [cc + (torch.stack([d[t].double() for d in delta_c]).sum(0) / n).float()  # c + |S|/N · mean Δc_i
             for t, cc in enumerate(c)]
        load_all([models[i] for i in S], x)
    return models, c_i


def write_rgb_classes(root, silos: int = 2, classes: int = 10, per_class: int = 2, size: int = 16):
    """A classification dataset as a hospital might have it: RGB JPEG-free PNGs, no masks,
    integer labels 0..9 in labels.csv, a test folder; colour depends on the class."""
    rng = np.random.default_rng(0)
    for name in [f"site{s}" for s in range(silos)] + ["test"]:
        (root / name / "images").mkdir(parents=True)
        rows = ["file,label"]
        for k in range(classes * per_class):
            c = k % classes
            base = np.array([25 * c, 255 - 25 * c, 120], dtype=np.float64)
            img = np.clip(base + rng.normal(0, 20, size=(size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img, "RGB").save(root / name / "images" / f"{k:03d}.png")
            rows.append(f"{k:03d}.png,{c}")
        (root / name / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


#: a plug-in run: data and model from tests/plugin_fixtures.py
PLUGIN = [
    "rounds=2", "train.local_steps=3", "train.batch_size=8", "train.eval_every=0", "train.lr=0.03", "topology=ring-4",
    "data.kind=python", "data.factory=tests.plugin_fixtures:load", "data.args={n: 24, size: 12}",
    "model.name=tests.plugin_fixtures:make_net", "model.args={width: 5}",
]
PLUGIN_TINY = ["rounds=1", "train.local_steps=1", "train.batch_size=8", "downstream.enabled=false", "compare_with=[]",
               "algorithm=fedavg"]


def assert_bad_plugin_is_one_line(tmp_path, capsys, case: str, message: str) -> None:
    """`fedsim run` of the plug-in run with ``case`` set exits 2 with one line containing ``message``."""
    args = [f"--set={s}" for s in PLUGIN + PLUGIN_TINY + [f"output_dir={tmp_path}", "model.args={}", "data.args={}",
                                                          "data.domains=null", "data.unseen_fraction=0", case]]
    code = main(["run", "--nproc", "2", "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("fedsim: error: ") and message in err, err

