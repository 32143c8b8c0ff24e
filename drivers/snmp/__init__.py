"""SNMP driver package: UPS units and environment monitors over SNMP v1/v2c/v3.

``driver`` holds the config model and the driver, ``profile`` loads the vendor
tables (``profiles/*.yaml``), ``readings`` maps raw values to metrics, and
``session`` speaks SNMP through pysnmp (imported only when a device starts).
"""

from roomwatch.drivers.snmp.driver import ContactConfig, SnmpConfig, SnmpDriver

__all__ = ["ContactConfig", "SnmpConfig", "SnmpDriver"]
