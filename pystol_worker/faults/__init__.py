"""What every fault shares: choosing targets, guarding the blast radius, holding a fault
for its duration and watching the hit workloads recover.
"""
