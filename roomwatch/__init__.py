"""roomwatch: server-room monitor (agent, collector, drivers, alerts).

This small package holds what agent and collector share: the command line,
config machinery, the push wire format and metric exposition.
"""

__version__ = "0.1.0"
