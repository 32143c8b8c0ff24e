"""``roomwatch discover``: the agent's ``devices:`` written for the user (see docs/discover.md).

``main`` runs the sources at once and prints the YAML; ``targets`` parses and caps what may be
scanned; ``snmp``, ``nut``, ``mqtt`` and ``modbus`` find devices, each by running the agent's own
driver once (``probe``); ``report`` names them and renders the commented YAML.
"""
