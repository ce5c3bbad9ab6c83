"""The processes: the Celery application and its tasks, the worker and beat entry
points, and their health files. The top layer: it wires the others together.
"""
