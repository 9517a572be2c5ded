"""Differentiable Earth Mover's Distance similarity (eq. 3 of the FedEFM paper): exact, cvxpylayers, Sinkhorn."""

from fedsim.emd.core import (
    BACKENDS,
    WEIGHTINGS,
    EMDConfig,
    cost_matrix,
    emd_similarity,
    emd_similarity_from_cost,
    emd_similarity_many,
    load_solver,
    node_weights,
    to_nodes,
    transport_problem,
)

__all__ = [
    "BACKENDS",
    "WEIGHTINGS",
    "EMDConfig",
    "cost_matrix",
    "emd_similarity",
    "emd_similarity_from_cost",
    "emd_similarity_many",
    "load_solver",
    "node_weights",
    "to_nodes",
    "transport_problem",
]
