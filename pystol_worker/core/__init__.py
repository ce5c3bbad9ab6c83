"""The bottom layer: the job model, settings, errors and pure syntax checks.

Nothing here talks to Redis or Kubernetes, so every other layer may import it and it
imports no other layer.
"""
