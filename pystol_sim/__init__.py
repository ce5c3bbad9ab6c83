"""pystol_sim: a simulated Kubernetes cluster reached over HTTP like a real one.

It imports nothing from pystol_api or pystol_worker, and they import nothing
from it: Pystol talks to it with the official clients only.
"""
