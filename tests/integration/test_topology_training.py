"""Training on a multigraph overlay: only the arcs of the round's state exchange, and the
simulated clock in the metrics equals an independent max-plus re-computation (real spawned gloo
ranks, tiny data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fedsim.config import load_config
from fedsim.data import NUM_CLASSES
from fedsim.launch import spawn
from fedsim.models import build_model
from fedsim.netmodel import DelayModel, arc_delays, multigraph_active_arcs
from fedsim.plan import build_plan
from fedsim.topology import load_topology
from fedsim.trainer import run_rank

N = 5
ROUNDS = 6
COMPUTE_MS = 3.0
ACCESS_GBPS = 10.0
# A directed ring 0→1→2→3→4→0 with multigraph parallel-edge counts (states repeat every 6 rounds)
# and distinct link attributes, so that the max-plus recursion is not trivial.
PARALLEL = [1, 2, 1, 3, 2]
LATENCY = [10.0, 40.0, 5.0, 25.0, 60.0]
BANDWIDTH = [1000.0, 250.0, 500.0, 1000.0, 125.0]


def _write_topology(path: Path) -> Path:
    edges = [
        {"src": k, "dst": (k + 1) % N, "latency_ms": LATENCY[k], "bandwidth_mbps": BANDWIDTH[k],
         "parallel": PARALLEL[k]}
        for k in range(N)
    ]
    path.write_text(yaml.safe_dump({"name": "multigraph-5", "silos": N, "directed": True, "edges": edges},
                                   sort_keys=False))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("topo-train")
    topo_path = _write_topology(tmp / "multigraph-5.yaml")
    cfg = load_config(None, [
        "algorithm=gossip", f"topology={topo_path}", f"rounds={ROUNDS}", f"output_dir={tmp}", "name=mg",
        "seed=0", "device=cpu", "train.eval_every=0", "train.local_steps=1", "train.batch_size=8",
        "data.samples_per_silo=32", "data.image_size=16", "data.test_samples=32", "model.width=4",
        f"net.compute_ms={COMPUTE_MS}", f"net.access_gbps={ACCESS_GBPS}",
    ])
    cfg.scenario = "dfl"
    run_dir = tmp / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = spawn(run_rank, 2, build_plan(cfg, run_dir, 2), timeout_s=60)[0]
    records = {}
    for i in range(N):
        lines = (run_dir / "metrics" / f"silo_{i}.jsonl").read_text().splitlines()
        for line in lines:
            rec = json.loads(line)
            records[(rec["round"], rec["silo"])] = rec
    bits = sum(t.numel() * t.element_size() * 8 for t in build_model(cfg.model, NUM_CLASSES).state_dict().values())
    return load_topology(topo_path), records, summary, float(bits)


def test_only_the_states_arcs_exchange(trained):
    topo, records, _, bits = trained
    assert len(records) == N * ROUNDS
    seen_idle = False
    for k in range(ROUNDS):
        active = multigraph_active_arcs(topo, k)
        # the state: arc k→k+1 is strong in round r when r mod parallel[k] == 0
        assert active == {(j, (j + 1) % N) for j in range(N) if k % PARALLEL[j] == 0}
        seen_idle |= len(active) < N
        for i in range(N):
            rec = records[(k, i)]
            expected = {str(d) for s, d in active if s == i}
            assert set(rec["bytes_by_dst"]) == expected, (k, i, rec["bytes_by_dst"])
            assert all(b > 0 for b in rec["bytes_by_dst"].values())
            assert rec["bytes_sent"] == sum(rec["bytes_by_dst"].values())
            # one model copy per active arc
            for b in rec["bytes_by_dst"].values():
                assert b == pytest.approx(bits / 8, rel=0.01)
    assert seen_idle


def _hand_delay(j: int, bits: float) -> float:
    """d(j→j+1) = T_c + ℓ + max(δ⁺·u_j, δ⁻·u_i, M / bandwidth); every degree is 1 on the ring."""
    u = bits / (ACCESS_GBPS * 1e6)  # ms
    tau = bits / (BANDWIDTH[j] * 1e3)  # ms
    return COMPUTE_MS + LATENCY[j] + max(u, u, tau)


def test_sim_time_is_the_max_plus_recursion(trained):
    topo, records, summary, bits = trained
    model = DelayModel(model_bits=bits, compute_ms=COMPUTE_MS, access_gbps=ACCESS_GBPS)
    delays = arc_delays(topo, model)
    assert set(delays) == {(j, (j + 1) % N) for j in range(N)}
    for j in range(N):
        assert delays[(j, (j + 1) % N)] == pytest.approx(_hand_delay(j, bits), rel=1e-12)
    t = [0.0] * N
    for k in range(ROUNDS):
        active = multigraph_active_arcs(topo, k)
        new = [t[i] + COMPUTE_MS for i in range(N)]
        for j, i in active:
            new[i] = max(new[i], t[j] + delays[(j, i)])
        t = new
        for i in range(N):
            assert records[(k, i)]["sim_time_ms"] == pytest.approx(t[i], rel=1e-9, abs=1e-9), (k, i)
        assert summary["sim_time_ms"][k] == pytest.approx(max(t), rel=1e-9)
    # an idle arc is not waited for: some silo's clock advanced by compute alone in some round
    assert any(records[(k, i)]["sim_time_ms"] - (records[(k - 1, i)]["sim_time_ms"]) == pytest.approx(COMPUTE_MS)
               for k in range(1, ROUNDS) for i in range(N))
