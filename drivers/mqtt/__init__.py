"""MQTT room sensors: shared broker connections, data-driven payload formats, the ``mqtt`` driver.

Modules: :mod:`~drivers.mqtt.connection` (one paho client per broker),
:mod:`~drivers.mqtt.payloads` (quantities, plausible ranges, decoders),
:mod:`~drivers.mqtt.formats` (value, json, zigbee2mqtt, Tasmota, ESPHome, Shelly),
:mod:`~drivers.mqtt.availability` (online/offline topics per format, their payloads),
:mod:`~drivers.mqtt.driver` (config model and driver; registers ``mqtt``).
paho-mqtt is imported only when a device starts.
"""

from roomwatch.drivers.mqtt.driver import MqttConfig, MqttDriver

__all__ = ["MqttConfig", "MqttDriver"]
