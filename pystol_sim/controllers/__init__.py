"""The simulated cluster's controllers, one module per kind, around one object store.

`manager` owns the work queue (the dirty set), the timers and the loop; each
controller declares the kind it reconciles (`resource`), which writes make it
mark objects dirty (`observe`) and how it reconciles one object. `objects`
holds what they share about object shapes; `pod_factory` creates a workload's
pods. `pystol_sim.cluster.Cluster` is the facade the rest of the sim uses.
"""
