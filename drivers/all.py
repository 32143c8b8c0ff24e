"""The built-in drivers: driver name → the module that registers it. Adding a driver adds one line here.

The agent imports a driver's module only when its config names that driver, so an
agent without SNMP devices never pays (in memory) for the SNMP driver's code.
"""

BUILTIN: dict[str, str] = {
    "gpio": "roomwatch.drivers.gpio",
    "host": "roomwatch.drivers.host",
    "modbus": "roomwatch.drivers.modbus",
    "mqtt": "roomwatch.drivers.mqtt",
    "nut": "roomwatch.drivers.nut",
    "snmp": "roomwatch.drivers.snmp",
}
