"""The documented, deliberate differences that RLlib's restated tests exercise (docs/rllib-inside.md)."""
from __future__ import annotations

#: The reason carried by every test that exercises our true ring (docs/rllib-inside.md).
TRUE_RING = ("deliberate difference: a true ring of `capacity` timesteps evicts the oldest items until the new "
             "one fits; RLlib's ring replaces one list slot per item and lets the stored timesteps exceed capacity")
