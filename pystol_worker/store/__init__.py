"""What Pystol keeps in Redis: job records and their timelines, the halt switch, and
the metrics every process records.
"""
