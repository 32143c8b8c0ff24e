"""``roomwatch demo``: a collector, an agent and simulated devices on 127.0.0.1 (the top layer)."""
