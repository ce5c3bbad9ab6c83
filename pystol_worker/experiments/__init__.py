"""Experiments: stored documents, runs, and the engine that advances them one step job at a time."""
