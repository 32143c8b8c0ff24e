"""The built-in drivers: driver name → the module that registers it. Adding a driver adds one line here.

The agent imports a driver's module only when its config names that driver, so an
agent without SNMP devices never pays (in memory) for the SNMP driver's code.
"""

BUILTIN: dict[str, str] = {
    "gpio": "drivers.gpio",
    "host": "drivers.host",
    "modbus": "drivers.modbus",
    "mqtt": "drivers.mqtt",
    "nut": "drivers.nut",
    "snmp": "drivers.snmp",
}
