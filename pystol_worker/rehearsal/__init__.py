"""Rehearsal: an experiment run against a private simulated copy of a cluster, at high
speed, before it touches the real one."""
