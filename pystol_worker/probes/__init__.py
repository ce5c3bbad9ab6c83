"""Steady-state probes: http (a URL, or a Service through the API server's proxy), k8s
(an object, or a count of pods), prometheus (a PromQL instant query); the error-budget
guard; and the loop that runs continuous and on-chaos probes. Probes only read."""
