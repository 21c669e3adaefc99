"""N-step transitions of a step stream: when each becomes complete, and its return.

Two small pure pieces, used on insert and at sample time:

* :func:`ready_range` (insert): which transitions of an episode become
  complete when one more step arrives. With ``n``-step returns, transition
  ``t`` needs steps ``t .. t+n-1`` (or fewer if the episode ends first), so it
  becomes sampleable ``n - 1`` steps after it happened, or at once when its
  episode ends. Doing this on insert keeps sampling free of validity checks.
* :func:`nstep_targets` (sample): the discounted return, the discount to apply
  to the bootstrap value and the number of steps used, from the ``[B, n]``
  rewards and end flags that follow each sampled transition.

Terminal vs. truncation (gymnasium's ``terminated`` / ``truncated``): a window
is cut at the first step that ends the episode. If that step *terminated*,
there is no bootstrap (discount 0). If it was *truncated* (a time limit), the
episode's final observation is a real state and the target bootstraps from it
with ``gamma ** m``. The learner's target is ``returns + discount * V(next_obs)``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["nstep_targets", "ready_range"]


def ready_range(first: np.ndarray, step: np.ndarray, ended: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive ranges of transitions that become complete when ``step`` is stored.

    ``first`` is the first step of each episode, ``step`` the one just stored,
    ``ended`` whether it ended the episode. Returns ``(lo, hi)``; ``hi < lo`` when
    nothing became complete (an episode shorter than ``n`` so far).
    """
    first = np.asarray(first, dtype=np.int64)
    step = np.asarray(step, dtype=np.int64)
    oldest = step - (n - 1)
    lo = np.maximum(oldest, first)
    hi = np.where(ended, step, oldest)
    hi = np.where(hi < lo, lo - 1, hi)
    return lo, hi


def nstep_targets(rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                  gamma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n-step returns of windows of ``n`` steps, each cut at its first episode end.

    Args:
        rewards: ``[B, n]`` rewards of steps ``t .. t+n-1``.
        terminated, truncated: ``[B, n]`` bool end flags of the same steps.
            Entries after the first end are ignored (they belong to the next episode).
        gamma: discount per step.

    Returns:
        ``returns`` ``[B]`` (float64): ``sum_{j<m} gamma^j r_{t+j}``;
        ``discount`` ``[B]``: ``0`` if step ``t+m-1`` terminated, else ``gamma^m``;
        ``steps`` ``[B]`` (int64): ``m``, the steps used (the bootstrap observation
        is the one after step ``t+m-1``).
    """
    B, n = rewards.shape
    ends = np.logical_or(terminated, truncated)
    any_end = ends.any(axis=1)
    m = np.where(any_end, np.argmax(ends, axis=1) + 1, n).astype(np.int64)
    powers = gamma ** np.arange(n, dtype=np.float64)
    used = np.arange(n)[None, :] < m[:, None]
    returns = (np.where(used, rewards, 0.0) * powers).sum(axis=1)
    last_terminated = terminated[np.arange(B), m - 1]
    discount = np.where(last_terminated, 0.0, gamma ** m.astype(np.float64))
    return returns, discount, m
