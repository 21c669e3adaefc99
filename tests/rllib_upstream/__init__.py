"""RLlib's own buffer tests, restated against ReplayTables.rllib.

A package so that its conftest does not shadow tests/conftest.py.
"""
