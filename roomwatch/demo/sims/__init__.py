"""Simulated devices for ``roomwatch demo``: each module defines a SIMULATOR that roomwatch.demo.run.simulators() lists.

A simulator starts a real server on 127.0.0.1 (snmpsim, upsd with dummy-ups,
mosquitto, a pymodbus server …) and returns the agent device entries that read
it. Modules are loaded in name order.
"""
