"""Cluster access: the one retried, rate-limited path to the Kubernetes API, the
`Cluster` interface actions depend on, Kubernetes object helpers, an in-process fake
cluster for unit tests, and the RBAC rules Pystol needs.
"""
