"""rs_jax: rewarded soups in JAX.

Fine-tune one expert per proxy reward from a shared initialization, then
interpolate their weights θ(λ) = Σᵢ λᵢθᵢ to trace a Pareto front over user
preferences, with the MORL baseline beside it.
"""

from rs_jax import checkpoint, distributed, experiment, merge_rules, operands, pareto, plots, progress, soup
from rs_jax.checkpoint import (
    Manifest,
    interpolate_checkpoints,
    restore_expert,
    restore_experts,
    save_expert,
)
from rs_jax.pareto import expected_utility, hypervolume, lmc_check, pareto_front, pareto_mask
from rs_jax.soup import (
    check_compatible,
    diagonal_fisher,
    fisher_merge,
    interpolate,
    simplex_grid,
    stack_experts,
    sweep,
)

__version__ = "0.1.0"

__all__ = [
    "Manifest",
    "check_compatible",
    "checkpoint",
    "diagonal_fisher",
    "distributed",
    "expected_utility",
    "experiment",
    "fisher_merge",
    "hypervolume",
    "interpolate",
    "interpolate_checkpoints",
    "lmc_check",
    "merge_rules",
    "operands",
    "pareto",
    "pareto_front",
    "pareto_mask",
    "plots",
    "progress",
    "restore_expert",
    "restore_experts",
    "save_expert",
    "simplex_grid",
    "soup",
    "stack_experts",
    "sweep",
]
