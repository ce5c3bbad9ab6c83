"""A job's life: the one submission path every producer uses, validation, the runner
that takes a job to its one terminal state, steady-state probes, and the reaper.
"""
