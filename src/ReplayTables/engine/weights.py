"""Importance weights: one function of the probabilities, the smallest probability and beta.

Prioritized replay corrects the bias of sampling item ``i`` with probability
``P(i)`` by the weight ``w_i = (N P(i))^-beta / max_j (N P(j))^-beta`` (Schaul et
al., 2016), where ``j`` runs over every stored item that a sample could return.
The largest weight belongs to the smallest probability ``P_min``, so ``N`` cancels
and ``w_i = (P(i) / P_min)^-beta``. Every sampler and front end computes weights
here, from the ``P_min`` of whatever mass it samples against: one table's own, or
the global mass of a sharded buffer (see :mod:`ReplayTables.engine.mass`).
"""
from __future__ import annotations

import numpy as np

__all__ = ["MIN_WEIGHT", "importance_weights"]

#: Smallest weight reported (numpy's smallest normal float64): a weight that would underflow
#: to 0 (beta > 1 over a huge priority range) is reported as this instead.
MIN_WEIGHT = float(np.finfo(np.float64).tiny)


def importance_weights(probabilities: np.ndarray, min_probability: float, beta: float) -> np.ndarray:
    """``(P / P_min) ** -beta`` as a new float64 array, every value finite and in ``(0, 1]``.

    The result is clamped to ``[MIN_WEIGHT, 1]``: a ratio below 1 (rounding, or
    ``get`` of an item of probability 0, which no sample returns) gives 1, and a
    ratio that overflows or a power that underflows gives ``MIN_WEIGHT``, never 0,
    inf or NaN.
    ``beta == 0`` gives ones without a power; so does ``min_probability <= 0``,
    which only an empty mass has.
    """
    if beta == 0.0 or not min_probability > 0.0:
        ones = np.empty(len(probabilities), dtype=np.float64)  # np.ones, without its Python wrapper
        ones.fill(1.0)
        return ones
    # (P / P_min) ** -beta written as (P_min / max(P, P_min)) ** beta: the ratio is in (0, 1] (0 only
    # by underflow), so neither the division nor the power can divide by zero or overflow, and four
    # ufunc calls do it without numpy's error-state switch (~1 us) or np.clip's Python wrapper
    weights: np.ndarray = np.maximum(probabilities, min_probability, dtype=np.float64)
    np.divide(min_probability, weights, out=weights)
    np.power(weights, beta, out=weights)
    np.maximum(weights, MIN_WEIGHT, out=weights)
    return weights
