"""Procedural endovascular X-ray images in four domains, vectorized with torch.

Every image shows a vessel ("access route") whose shape is the foundation label (6 patterns, see
:data:`CLASS_NAMES`), a catheter (thick, smooth) following the route from the access point, a
guidewire (thin, darker) continuing past the catheter tip, and a round landmark marker beside the
route. The tube-position label says where the guidewire tip lies relative to the landmark:
well before it (normal), at it (borderline) or past it (abnormal).

Rendering: curves are cubic Beziers sampled densely and scattered onto the pixel grid; a distance
field is grown from those pixels by iterated 3x3 max-pooling (alternating square and cross
neighbourhoods = an octagonal, near-Euclidean distance), and every structure is a profile of that
distance. Backgrounds are analytic fields plus upsampled low-frequency noise. All parameters are
drawn up front from one seeded ``torch.Generator`` and expressed in image-relative units, so the
same seed gives the same scene at 64x64 and 256x256.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from fedsim.config.data import DOMAINS, NUM_CLASSES
from fedsim.errors import DataError

from .dataset import SiloDataset, quantize_8bit
from .partition import largest_remainder

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_seed(seed: int, *stream: int) -> int:
    """A 63-bit seed from ``seed`` and stream ids; stable across processes and Python versions."""
    x = _splitmix64(int(seed) & _MASK64)
    for s in stream:
        x = _splitmix64(x ^ (int(s) & _MASK64))
    return x & ((1 << 63) - 1)


def make_generator(seed: int, *stream: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *stream))
    return g


# Route templates: cubic Bezier control points (x right, y down, image = [0,1]^2).
_ROUTES = torch.tensor([
    [[0.50, 1.08], [0.50, 0.75], [0.50, 0.40], [0.50, 0.08]],   # 0 straight
    [[0.64, 1.08], [0.68, 0.22], [0.22, 0.02], [0.16, 0.52]],   # 1 left arch
    [[0.36, 1.08], [0.32, 0.22], [0.78, 0.02], [0.84, 0.52]],   # 2 right arch
    [[0.50, 1.08], [0.50, 0.72], [0.48, 0.45], [0.24, 0.10]],   # 3 bifurcation (device branch)
    [[0.30, 1.08], [1.00, 0.68], [0.00, 0.42], [0.64, 0.06]],   # 4 tortuous S
    [[-0.08, 0.64], [0.38, 0.74], [0.52, 0.28], [0.90, 0.22]],  # 5 radial / lateral access
])
# Second major branch, drawn for the bifurcation class only.
_BRANCH = torch.tensor([[0.50, 0.60], [0.52, 0.42], [0.64, 0.26], [0.78, 0.10]])

# Per-domain constants, indexed by domain id (human, animal, phantom, simulation).
_VESSEL_R = torch.tensor([0.032, 0.052, 0.042, 0.038])      # main vessel radius (image units)
_SIDE_P = torch.tensor([0.95, 0.45, 0.25, 0.6])              # probability of each side branch

_N_SIDE = 3
_N_PARAMS = 40


def _bezier(ctrl: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Points and tangents of cubic Beziers ``ctrl`` (B, 4, 2) at parameters ``t`` (B, T)."""
    s = 1.0 - t
    basis = torch.stack([s * s * s, 3 * s * s * t, 3 * s * t * t, t * t * t], dim=-1)  # (B,T,4)
    dbasis = torch.stack([-3 * s * s, 3 * s * s - 6 * s * t, 6 * s * t - 3 * t * t, 3 * t * t], dim=-1)
    return basis @ ctrl, dbasis @ ctrl


def _sample(ctrl: Tensor, t0: Tensor, t1: Tensor, n_pts: int, wobble: Tensor | None = None,
            phase: Tensor | None = None) -> Tensor:
    """``n_pts`` points per curve between parameters t0..t1, optionally wobbling along the normal."""
    u = torch.linspace(0.0, 1.0, n_pts)
    t = t0[:, None] + (t1 - t0)[:, None] * u[None, :]
    pts, tan = _bezier(ctrl, t)
    if wobble is not None:
        nrm = torch.stack([-tan[..., 1], tan[..., 0]], dim=-1)
        nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        off = wobble[:, None] * torch.sin(2 * math.pi * (2.0 * t + phase[:, None]))
        pts = pts + nrm * off[..., None]
    return pts


def _imax(dst: Tensor, src: Tensor) -> None:
    torch.maximum(dst, src, out=dst)


def _distance(v: Tensor, steps: int) -> Tensor:
    """Approximate Euclidean distance field, (B, C, H, W) -> (B, C, H, W).

    ``v`` holds minus the starting distance on seed pixels (0, or -offset to grow a thinner
    tube) and a large negative value elsewhere. ``steps`` 3x3 dilations (shifted in-place maxima,
    no padding copies) alternate square and cross neighbourhoods: an octagonal, near-Euclidean
    metric. Distances beyond the last step stay at the initial large value.
    """
    for k in range(steps):
        h = v.clone()
        _imax(h[..., 1:], v[..., :-1])
        _imax(h[..., :-1], v[..., 1:])
        if k % 2 == 0:  # square = horizontal then vertical max
            m = h.clone()
            _imax(m[..., 1:, :], h[..., :-1, :])
            _imax(m[..., :-1, :], h[..., 1:, :])
        else:  # cross = horizontal max joined with the vertical neighbours
            m = h
            _imax(m[..., 1:, :], v[..., :-1, :])
            _imax(m[..., :-1, :], v[..., 1:, :])
        v = torch.maximum(v, m - 1.0)
    return -v


def _seeds(hit: Tensor, size: int, offset: Tensor | float = 0.0, big: float = 1e4) -> Tensor:
    """(B, size*size) hit map -> (B, 1, size, size) distance seeds for :func:`_distance`."""
    off = offset if isinstance(offset, float) else offset.view(-1, 1)
    return torch.where(hit > 0, -off, -big).view(hit.shape[0], 1, size, size)


def _blur3(x: Tensor) -> Tensor:
    """Separable [1,2,1]/4 blur with replicate padding, (B,1,H,W)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    h = 0.25 * p[..., :, :-2] + 0.5 * p[..., :, 1:-1] + 0.25 * p[..., :, 2:]
    return 0.25 * h[..., :-2, :] + 0.5 * h[..., 1:-1, :] + 0.25 * h[..., 2:, :]


def domain_indices(domains, n: int) -> Tensor:
    """Per-sample domain ids from a name, a list of names (cycled), a {name: weight} mixture
    (exact counts by largest remainder, in blocks) or a per-sample sequence of ids/names."""
    def idx(name) -> int:
        if isinstance(name, int) or (isinstance(name, Tensor) and name.dim() == 0):
            i = int(name)
            if not 0 <= i < len(DOMAINS):
                raise DataError(f"domain index {i} is not in 0..{len(DOMAINS) - 1} ({', '.join(DOMAINS)})")
            return i
        if name not in DOMAINS:
            raise DataError(f"unknown domain {name!r}; choose from {', '.join(DOMAINS)}")
        return DOMAINS.index(name)

    if domains is None:
        domains = list(DOMAINS)
    if isinstance(domains, str):
        return torch.full((n,), idx(domains), dtype=torch.long)
    if isinstance(domains, Tensor):
        if domains.shape != (n,):
            raise DataError(f"per-sample domains must have shape ({n},), got {tuple(domains.shape)}")
        for d in domains.unique().tolist():
            idx(int(d))
        return domains.long().clone()
    if isinstance(domains, dict):
        names = list(domains)
        counts = largest_remainder([float(domains[k]) for k in names], n)
        return torch.cat([torch.full((c,), idx(k), dtype=torch.long) for k, c in zip(names, counts)])
    domains = list(domains)
    if not domains:
        raise DataError("domains must not be empty")
    ids = torch.tensor([idx(d) for d in domains], dtype=torch.long)
    return ids[torch.arange(n) % len(ids)]


ERASABLE = ("devices", "vessels")


def generate(n: int, *, domains=None, image_size: int = 64, seed: int = 0, labels: Tensor | None = None,
             tube: Tensor | None = None, attribute: Tensor | None = None, name: str = "",
             erase: tuple[str, ...] = ()) -> SiloDataset:
    """Generate ``n`` synthetic endovascular X-ray images.

    ``domains``: a domain name, a list of names (cycled), a ``{name: weight}`` mixture, or a
    per-sample tensor of domain ids. ``labels`` / ``tube`` / ``attribute`` fix the per-sample
    foundation label, tube-position label and age-like attribute (random when None).
    ``erase`` (analysis only): leave ``"devices"`` (catheter and guidewire) or ``"vessels"`` (the
    vessel tree) out of the pixels of otherwise identical scenes — masks and labels unchanged —
    to ask what a model looks at.
    Deterministic: the same arguments give bit-identical tensors in any process.
    """
    bad = [e for e in erase if e not in ERASABLE]
    if bad:
        raise DataError(f"erase: unknown part(s) {', '.join(map(repr, bad))}; choose from {', '.join(ERASABLE)}")
    if n < 0:
        raise DataError(f"cannot generate {n} images")
    if image_size < 16:
        raise DataError(f"image_size must be at least 16, got {image_size}")
    size = int(image_size)
    dom = domain_indices(domains, n)
    g = make_generator(seed, 0x5EED)
    u = torch.rand(n, _N_PARAMS, generator=g)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    tb = torch.randint(0, 3, (n,), generator=g)
    at = torch.rand(n, generator=g)
    y = y if labels is None else torch.as_tensor(labels, dtype=torch.long).clone()
    tb = tb if tube is None else torch.as_tensor(tube, dtype=torch.long).clone()
    at = at if attribute is None else torch.as_tensor(attribute, dtype=torch.float32).clone()
    for key, val in (("labels", y), ("tube", tb), ("attribute", at)):
        if val.shape != (n,):
            raise DataError(f"{key} must have shape ({n},), got {tuple(val.shape)}")
    if n and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"labels must be in 0..{NUM_CLASSES - 1}")
    if n and (tb.min() < 0 or tb.max() > 2):
        raise DataError("tube labels must be in 0..2")

    images = torch.empty(n, 1, size, size)
    masks = torch.empty(n, size, size, dtype=torch.long)
    chunk = max(1, (1 << 19) // (size * size))  # fixed by image size only -> deterministic
    # One intra-op thread: the same bits whatever the caller's thread setting, and no OpenMP
    # oversubscription when several simulated silos/ranks share a few cores (2 threads on a busy
    # 2-core machine was 20x slower than 1).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            img, msk = _render(u[s:e], y[s:e], tb[s:e], at[s:e], dom[s:e], size, g, tuple(erase))
            images[s:e] = img
            masks[s:e] = msk
    finally:
        torch.set_num_threads(threads)
    return SiloDataset(images, masks, y, tb, dom, at.float(), None, name)


def _render(u: Tensor, y: Tensor, tube: Tensor, attr: Tensor, dom: Tensor, size: int, g: torch.Generator,
            erase: tuple[str, ...] = ()):
    b = u.shape[0]
    S = size
    # ---- geometry ---------------------------------------------------------------------------
    jit = (0.035 + 0.05 * attr)[:, None, None]
    route = _ROUTES[y].clone()
    route[:, 1:, :] += (u[:, 0:6].view(b, 3, 2) - 0.5) * 2 * jit
    route[:, 0, 0] += (u[:, 6] - 0.5) * 0.08
    branch = _BRANCH.expand(b, 4, 2).clone()
    branch[:, 1:, :] += (u[:, 7:13].view(b, 3, 2) - 0.5) * 2 * jit
    is_bif = y == 3
    branch[:, 0, :] = _bezier(route, torch.full((b, 1), 0.45))[0][:, 0]  # branch starts on the trunk
    mirror = is_bif & (u[:, 13] < 0.5)
    for c in (route, branch):
        c[mirror, :, 0] = 1.0 - c[mirror, :, 0]

    # landmark and device tips (route parameters)
    t_mark = 0.60 + 0.18 * u[:, 14]
    lo = torch.tensor([-0.22, -0.03, 0.10])[tube]
    hi = torch.tensor([-0.12, 0.03, 0.20])[tube]
    t_guide = (t_mark + lo + (hi - lo) * u[:, 15]).clamp(0.05, 1.0)
    t_cath = (t_guide - (0.12 + 0.10 * u[:, 16])).clamp_min(0.02)
    zero = torch.zeros(b)

    n_pts = int(2.5 * S) + 8
    vr = _VESSEL_R[dom] * (0.85 + 0.3 * u[:, 17])
    main_pts = torch.cat([
        _sample(route, zero, torch.ones(b), n_pts),
        _sample(branch, zero, torch.ones(b), n_pts),
    ], dim=1)
    main_en = torch.cat([torch.ones(b, n_pts, dtype=torch.bool), is_bif[:, None].expand(b, n_pts)], dim=1)
    # side branches: short curves leaving the route at random points
    side_pts, side_en = [], []
    for k in range(_N_SIDE):
        o = 18 + 4 * k
        ts = 0.15 + 0.7 * u[:, o]
        p0, tan = _bezier(route, ts[:, None])
        p0, tan = p0[:, 0], tan[:, 0]
        tan = tan / tan.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        side = torch.where(u[:, o + 1] < 0.5, -1.0, 1.0)
        ang = side * (0.6 + 0.7 * u[:, o + 2])  # radians away from the route direction
        d = torch.stack([tan[:, 0] * torch.cos(ang) - tan[:, 1] * torch.sin(ang),
                         tan[:, 0] * torch.sin(ang) + tan[:, 1] * torch.cos(ang)], dim=-1)
        length = 0.10 + 0.12 * u[:, o + 3]
        p3 = p0 + d * length[:, None]
        ctrl = torch.stack([p0, p0 + d * length[:, None] / 3, (p0 + 2 * p3) / 3 + tan * 0.03, p3], dim=1)
        side_pts.append(_sample(ctrl, zero, torch.ones(b), n_pts // 3))
        side_en.append((u[:, 30 + k] < _SIDE_P[dom])[:, None].expand(b, n_pts // 3))
    side_pts = torch.cat(side_pts, dim=1)
    side_en = torch.cat(side_en, dim=1)

    wob = 0.004 + 0.004 * u[:, 33]
    cath_pts = _sample(route, zero, t_cath, n_pts, wob, u[:, 34])
    guide_pts = _sample(route, (t_cath - 0.01).clamp_min(0), t_guide, n_pts, wob, u[:, 34])

    true_ = torch.ones(b, dtype=torch.bool)
    # Clinical-looking domains (human, animal) are blurred anyway: their vessel distance field is
    # grown at half resolution (4x fewer pixels, half the steps) and upsampled. Phantom and
    # simulation keep full-resolution outlines up to 64x64 (half resolution above, where the
    # interpolated distance is still smooth). Device masks are always full resolution.
    dhits = torch.stack([_scatter(cath_pts, true_[:, None].expand(b, n_pts), S),
                         _scatter(guide_pts, true_[:, None].expand(b, n_pts), S)], dim=1)  # (B, 2, S*S)
    r_v_px = vr * S
    r_c = max(1, int(round(0.018 * S)))
    r_g = int(round(0.006 * S))
    # Side branches start at a positive distance (thinner tubes) in the same distance field.
    vdist = torch.empty(b, S, S)
    for soft in (True, False):
        sel = ((dom <= 1) if soft else (dom >= 2)).nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        sv = S // 2 if (soft and S >= 32) or S > 64 else S
        scale = sv / S
        seeds = torch.maximum(_seeds(_scatter(main_pts[sel], main_en[sel], sv), sv),
                              _seeds(_scatter(side_pts[sel], side_en[sel], sv), sv,
                                     torch.round(0.45 * r_v_px[sel] * scale)))
        steps = int(math.ceil(float(r_v_px[sel].max()) * scale + 1.0))
        vd = _distance(seeds, steps)
        if sv != S:
            vd = F.interpolate(vd, size=(S, S), mode="bilinear", align_corners=False)
        vdist[sel] = vd[:, 0] / scale
    # devices only need "within radius": r_c / r_g dilation steps
    cath = _distance(_seeds(dhits[:, 0], S), r_c)[:, 0] <= r_c
    guide = (_distance(_seeds(dhits[:, 1], S), r_g)[:, 0] <= r_g) & ~cath
    r_v = r_v_px.view(b, 1, 1)
    vessel = torch.sqrt((1.0 - (vdist / (r_v + 0.5)) ** 2).clamp_min(0.0))
    if "vessels" in erase:
        vessel = torch.zeros_like(vessel)
        vdist = torch.full_like(vdist, 1e4)  # the phantom's outline is drawn from the distance
    mask = torch.zeros(b, S, S, dtype=torch.long)
    mask[guide] = 2
    mask[cath] = 1

    # landmark disk beside the route at t_mark
    pm, tm = _bezier(route, t_mark[:, None])
    pm, tm = pm[:, 0], tm[:, 0]
    nm = torch.stack([-tm[:, 1], tm[:, 0]], dim=-1)
    nm = nm / nm.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    mside = torch.where(u[:, 35] < 0.5, -1.0, 1.0)[:, None]
    centre = pm + nm * mside * (vr[:, None] + 0.075)
    coords = (torch.arange(S, dtype=torch.float32) + 0.5) / S
    yy = coords.view(1, S, 1)
    xx = coords.view(1, 1, S)
    dm = torch.sqrt((xx - centre[:, 0, None, None]) ** 2 + (yy - centre[:, 1, None, None]) ** 2)
    marker = ((0.032 - dm) * S + 0.5).clamp(0, 1)

    # ---- backgrounds and composition, per domain ---------------------------------------------
    low_g = torch.randn(b, 1, 4, 4, generator=g)
    mid_g = torch.randn(b, 1, 10, 10, generator=g)

    def up(grid: Tensor) -> Tensor:
        return F.interpolate(grid, size=(S, S), mode="bilinear", align_corners=False)[:, 0]

    noise = torch.randn(b, S, S, generator=g)
    img = torch.empty(b, S, S)
    cathf, guidef = cath.float(), guide.float()
    if "devices" in erase:
        cathf, guidef = torch.zeros_like(cathf), torch.zeros_like(guidef)
    for di in range(len(DOMAINS)):
        sel = (dom == di).nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        k = sel.numel()
        a = attr[sel].view(k, 1, 1)
        ph = u[sel, 36].view(k, 1, 1)
        ves, cf, gf, mk = vessel[sel], cathf[sel], guidef[sel], marker[sel]
        if di == 0:  # human: spine + curved ribs, soft tissue, low-contrast dense vessel tree
            sx = 0.5 + 0.08 * (u[sel, 37].view(k, 1, 1) - 0.5)
            spine = torch.exp(-(((xx - sx) / 0.085) ** 2))
            ribs = torch.sin(2 * math.pi * (5.5 * yy + 2.2 * (xx - sx) ** 2 + ph)).clamp_min(0) ** 2
            ribs = ribs * (torch.abs(xx - sx) > 0.1).float()
            bg = 0.50 + 0.06 * up(low_g[sel]) + (0.14 * spine + 0.10 * ribs) * (1.0 - 0.5 * a)
            x = _blur3((bg * (1.0 - 0.22 * ves)).unsqueeze(1))[:, 0]
            x = x * (1.0 - 0.45 * cf - 0.70 * gf - 0.45 * mk)
            x = x + 0.045 * torch.sqrt(x.clamp_min(0.01) / 0.5) * noise[sel]
        elif di == 1:  # animal: darker, coarse mottled texture, broad diagonal bone, larger vessels
            band = torch.exp(-(((xx + yy - 1.0 - 0.4 * (ph - 0.5)) / 0.22) ** 2))
            bg = 0.34 + up(0.04 * low_g[sel]) + 0.10 * up(mid_g[sel]) + 0.18 * band * (1.0 - 0.4 * a)
            x = _blur3((bg * (1.0 - 0.30 * ves)).unsqueeze(1))[:, 0]
            x = x * (1.0 - 0.45 * cf - 0.70 * gf - 0.45 * mk)
            x = x + 0.035 * torch.sqrt(x.clamp_min(0.01) / 0.5) * noise[sel]
        elif di == 2:  # phantom: clean field, sharp silicone outlines, circular fixture ring
            fx = torch.where(u[sel, 38] < 0.5, 0.22, 0.78).view(k, 1, 1)
            fy = 0.22 + 0.56 * u[sel, 39].view(k, 1, 1)
            ring_d = torch.sqrt((xx - fx) ** 2 + (yy - fy) ** 2)
            ring = ((0.018 - torch.abs(ring_d - 0.17)) * S + 0.5).clamp(0, 1)
            outline = ((vdist[sel] - r_v[sel]).abs() <= max(0.75, S / 160)).float()
            bg = 0.80 + 0.05 * (yy - 0.5) - 0.45 * ring
            x = bg * (1.0 - 0.35 * outline - 0.08 * ves - 0.45 * cf - 0.70 * gf - 0.55 * mk)
            x = x + 0.008 * noise[sel]
        else:  # simulation: dark, smooth, noise-free render with bright structures
            x = 0.10 + 0.04 * (1.0 - yy) + 0.35 * ves + 0.5 * mk
            x = torch.where(cf > 0, 0.85, x)
            x = torch.where(gf > 0, 1.0, x)
        img[sel] = x
    # 8-bit levels, as an X-ray detector's export (and `fedsim data export`'s PNGs) holds them: a
    # run stores them as uint8 (fedsim.data.dataset.compact_images) at a quarter of the memory
    return quantize_8bit(img.clamp(0.0, 1.0)).unsqueeze(1), mask


def _scatter(pts: Tensor, enabled: Tensor, size: int) -> Tensor:
    """Hit map (B, size*size): 1 where an enabled point (``enabled`` (B, T)) falls."""
    b = pts.shape[0]
    col = torch.floor(pts[..., 0] * size).long()
    row = torch.floor(pts[..., 1] * size).long()
    ok = (col >= 0) & (col < size) & (row >= 0) & (row < size) & enabled
    flat = torch.where(ok, row * size + col, torch.full_like(col, size * size))
    hit = torch.zeros(b, size * size + 1)
    hit.scatter_(1, flat, 1.0)
    return hit[:, :-1]
