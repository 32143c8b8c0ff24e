"""MQTT room sensors: shared broker connections, data-driven payload formats, the ``mqtt`` driver.

Modules: :mod:`~roomwatch.drivers.mqtt.connection` (one paho client per broker),
:mod:`~roomwatch.drivers.mqtt.payloads` (quantities, plausible ranges, decoders),
:mod:`~roomwatch.drivers.mqtt.formats` (value, json, zigbee2mqtt, Tasmota, ESPHome, Shelly),
:mod:`~roomwatch.drivers.mqtt.availability` (online/offline topics per format, their payloads),
:mod:`~roomwatch.drivers.mqtt.driver` (config model and driver; registers ``mqtt``).
paho-mqtt is imported only when a device starts.
"""

from roomwatch.drivers.mqtt.driver import MqttConfig, MqttDriver

__all__ = ["MqttConfig", "MqttDriver"]
