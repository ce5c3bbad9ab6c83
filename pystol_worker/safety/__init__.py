"""The safety net every running job stands on: its context (halt and cancel checks),
the revert journal written before every change, and the target locks that keep two
jobs off one workload.
"""
