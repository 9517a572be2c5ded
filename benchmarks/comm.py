"""Transport benchmark: one table, ratios measured in the same run.

1. Exchanging a ResNet-18-sized state (≈47 MB) along ring-4 on 4 gloo ranks:
   our transport (one flat buffer per peer) vs one message per tensor vs a raw gloo send of the
   same bytes already in one buffer. Target: ours within 1.15× of the raw send.
2. Two silos handing a state over: co-located (same rank) vs through gloo (two ranks).
   Target: the co-located hand-off ≥ 10× faster.
3. Gossip with 4 silos on 2 ranks vs on 1 rank (wall time per round). Target: ≥ 1.6× speed-up.

1 and 2 start their ranks themselves (``fedsim.launch.spawn``): they time collectives inside the
ranks, where no run exists. 3 is an experiment like any other (``fedsim.experiment.run``).

    python benchmarks/comm.py [--repeats 5] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from fedsim import experiment  # noqa: E402
from fedsim.distributed import Placement  # noqa: E402
from fedsim.launch import spawn  # noqa: E402
from fedsim.topology import make_topology  # noqa: E402
from fedsim.transport import Transport, flatten_state, message_bytes, pack  # noqa: E402


def resnet18_state() -> list[torch.Tensor]:
    import torchvision

    torch.manual_seed(0)
    model = flatten_state(torchvision.models.resnet18(num_classes=1000))  # as silos hold models
    return list(model.state_dict().values())


def _ring_worker(ctx, repeats: int):
    torch.set_num_threads(1)
    state = resnet18_state()
    topo = make_topology("ring", ctx.world_size)
    placement = Placement(topo.num_silos, ctx.world_size)
    transport = Transport(placement, ctx.rank, ctx.device)
    me = ctx.rank
    outs = [i for j, i in topo.arcs if j == me]
    ins = [j for j, i in topo.arcs if i == me]

    def ours():
        transport.exchange({(me, i): state for i in outs}, {(j, me): state for j in ins})

    def send_pieces(pieces: list[torch.Tensor]) -> None:
        """Plain gloo: each piece to every out-neighbour, each piece from every in-neighbour."""
        ops = []
        for peer in sorted(set(outs) | set(ins)):
            for t in pieces:
                if peer in outs:
                    ops.append(dist.P2POp(dist.isend, t, peer))
                if peer in ins:
                    ops.append(dist.P2POp(dist.irecv, torch.empty_like(t), peer))
        for r in dist.batch_isend_irecv(ops):
            r.wait()

    flat = pack([state], ctx.device)

    def per_tensor():
        send_pieces(state)

    def raw():
        send_pieces([flat])

    results = {}
    for name, fn in (("ours", ours), ("per_tensor", per_tensor), ("raw", raw)):
        fn()  # warm-up
        dist.barrier()
        times = []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            dist.barrier()
            times.append(time.perf_counter() - t0)
        results[name] = min(times)
    return results, message_bytes(state), len(state)


def _handoff_worker(ctx, repeats: int):
    """Silo 0 hands its state to silo 1 (and back): on one rank a copy, on two ranks gloo."""
    torch.set_num_threads(1)
    state = resnet18_state()
    placement = Placement(2, ctx.world_size)
    transport = Transport(placement, ctx.rank, ctx.device)
    arcs = [(0, 1), (1, 0)]
    out = {a: state for a in arcs if transport.is_local(a[0])}
    inc = {a: state for a in arcs if transport.is_local(a[1])}
    transport.exchange(out, inc)
    times = []
    for _ in range(repeats):
        dist.barrier()
        t0 = time.perf_counter()
        transport.exchange(out, inc)
        dist.barrier()
        times.append(time.perf_counter() - t0)
    return min(times)


def gossip_seconds(nproc: int, rounds: int, tmp: str) -> float:
    summary = experiment.run(None, [
        "algorithm=gossip", "scenario=dfl", "topology=ring-4", f"rounds={rounds}", f"output_dir={tmp}",
        f"name=g{nproc}", "device=cpu", "compare_with=[]", "downstream.enabled=false",
        "train.eval_every=0", "train.local_steps=20", "data.samples_per_silo=256", "data.test_samples=64",
    ], nproc=nproc).summary
    times = summary["round_time_s"][1:] or summary["round_time_s"]  # round 0 warms caches
    return sum(times) / len(times)


def main() -> None:
    import tempfile

    from benchmarks.common import Record, add_record_args
    from fedsim.report import SECTION, console_table
    from fedsim.ui import console

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=4)
    add_record_args(ap, "comm")
    args = ap.parse_args()
    rec = Record.from_args(args, "comm", __file__)

    ring, nbytes, ntensors = spawn(_ring_worker, 4, args.repeats, threads=1)[0]
    local = spawn(_handoff_worker, 1, args.repeats, threads=1)[0]
    remote = spawn(_handoff_worker, 2, args.repeats, threads=1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        g1 = gossip_seconds(1, args.rounds, tmp)
        g2 = gossip_seconds(2, args.rounds, tmp)

    mb = nbytes / 1e6
    per_rank = 2 * nbytes  # each rank sends to two ring neighbours
    gbps = lambda s: f"{per_rank / s / 1e9:.2f}"  # noqa: E731
    rows = [
        [f"ring-4 exchange, ours (1 buffer/message, {mb:.1f} MB state)", f"{ring['ours'] * 1e3:.1f}",
         gbps(ring["ours"]), f"{ring['ours'] / ring['raw']:.2f}× raw", "≤ 1.15× raw"],
        [f"ring-4 exchange, one message per tensor ({ntensors} tensors)", f"{ring['per_tensor'] * 1e3:.1f}",
         gbps(ring["per_tensor"]), f"{ring['per_tensor'] / ring['raw']:.2f}× raw", ""],
        ["ring-4 exchange, raw gloo send of the same bytes", f"{ring['raw'] * 1e3:.1f}", gbps(ring["raw"]), "1.00", ""],
        SECTION,
        ["hand-off silo 0 ⇄ 1, co-located (1 rank)", f"{local * 1e3:.2f}", "", "", ""],
        ["hand-off silo 0 ⇄ 1, through gloo (2 ranks)", f"{remote * 1e3:.2f}", "", f"{remote / local:.1f}× slower",
         "co-located ≥ 10× faster"],
        SECTION,
        ["gossip ring-4, 4 silos on 1 rank, per round", f"{g1 * 1e3:.0f}", "", "1.00", ""],
        ["gossip ring-4, 4 silos on 2 ranks, per round", f"{g2 * 1e3:.0f}", "", f"{g1 / g2:.2f}× speed-up", "≥ 1.6×"],
    ]
    table = console_table(["measurement", "time (ms)", "GB/s", "ratio", "target"], rows,
                          title=f"fedsim transport on this machine ({os.cpu_count()} cores, gloo, CPU)",
                          justify=["left", "right", "right", "right", "left"])
    console().print(table)
    rec.table(table)
    rec.write({"ring_s": ring, "state_bytes": nbytes, "tensors": ntensors, "handoff_local_s": local,
               "handoff_remote_s": remote, "gossip_s_per_round": {"1 rank": g1, "2 ranks": g2}})


if __name__ == "__main__":
    main()
