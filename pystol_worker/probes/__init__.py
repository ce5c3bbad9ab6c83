"""Steady-state probes: http (a URL or a Service through the API server's proxy), k8s objects and pod counts, Prometheus queries; and the loop that runs continuous ones. Probes only read."""
