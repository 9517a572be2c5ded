"""Network delay model, overlays and cycle times (MultigraphFL: Marfoq et al., "Throughput-Optimal Topology Design for Cross-Silo Federated Learning", NeurIPS 2020).

Public API::

    DelayModel(model_bits=..., compute_ms=..., access_gbps=...)     # constants
    connectivity_graph(underlay, model) -> Connectivity             # K_N with ℓ, τ, hops
    build_overlay(conn, kind) / build_overlays(conn, kinds) -> Overlay(s); .cycle_time_ms, .to_topology()
    cycle_times(underlay, model, kinds) -> {kind: ms}
    max_cycle_mean(n, [(u, v, w), ...])                             # Karp
    arc_delays(topology, model) -> {(j, i): ms}                     # for a trained topology
    SimClock(topology, model, round_trip=False).step(active_arcs=None)
    multigraph_active_arcs(topology, round) -> {(j, i)}
"""

from fedsim.config.net import DEFAULT_ACCESS_GBPS, NetConfig
from fedsim.netmodel.clock import SimClock, arc_delays, clock_step, link_parameters, request_delays
from fedsim.netmodel.model import (
    FEMNIST_COMPUTE_MS,
    FEMNIST_MODEL_BITS,
    Connectivity,
    DelayModel,
    connectivity_graph,
    max_cycle_mean,
    overlay_arc_weights,
    overlay_cycle_time,
    tree_cycle_time,
)
from fedsim.netmodel.overlays import (
    EXTRA_KINDS,
    OVERLAY_KINDS,
    Overlay,
    build_overlay,
    build_overlays,
    matcha_active_arcs,
    multigraph_active_arcs,
)


def cycle_times(underlay, model=None, kinds=OVERLAY_KINDS) -> dict[str, float]:
    """Cycle time (ms) of each overlay kind on a network underlay."""
    conn = connectivity_graph(underlay, model)
    return {k: o.cycle_time_ms for k, o in build_overlays(conn, tuple(kinds)).items()}


__all__ = [
    "DEFAULT_ACCESS_GBPS", "EXTRA_KINDS", "FEMNIST_COMPUTE_MS", "FEMNIST_MODEL_BITS", "OVERLAY_KINDS", "Connectivity",
    "DelayModel", "NetConfig", "Overlay", "SimClock", "arc_delays", "build_overlay", "build_overlays",
    "clock_step", "connectivity_graph", "cycle_times", "link_parameters", "matcha_active_arcs",
    "max_cycle_mean", "multigraph_active_arcs", "overlay_arc_weights", "overlay_cycle_time",
    "request_delays", "tree_cycle_time",
]
