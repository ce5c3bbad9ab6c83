"""The safety net every running job stands on: its contexts (a read-only one for
selecting, and one with halt and cancel checks for running), the revert journal written
before every change, and the target locks that keep two jobs off one workload.
"""
