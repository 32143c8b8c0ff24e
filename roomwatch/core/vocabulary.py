"""The metric vocabulary: every metric name roomwatch exports, with help text and type.

Drivers map vendor keys (OIDs, NUT variables, registers, JSON fields) onto
these names and never invent names inline. The collector uses the same table
for ``# HELP``/``# TYPE`` lines. Names follow Prometheus conventions: one
prefix, base units, ``_ratio`` for 0..1, ``_total`` for counters.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HEALTH_METRICS", "METRICS", "RANGES", "MetricDef", "collector_owned", "describe", "family_base",
           "plausible"]


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str
    help: str
    type: str = "gauge"  # gauge | counter | info
    #: The physical range of a reading in the base unit (inclusive); None = no bound is known.
    #: A device value outside it is absent, never clamped (see drivers/plausible.py).
    range: tuple[float, float] | None = None


METRICS: dict[str, MetricDef] = {}
#: Metrics about a device's link rather than the room (up, poll errors, bad messages): the agent
#: and the collector keep showing them while the device is down, since they tell why it is down.
HEALTH_METRICS: set[str] = set()
#: metric → (low, high): the plausible range of every device quantity, in one place. Every driver
#: (SNMP, NUT, Modbus, MQTT, host, GPIO) drops a reading outside it and counts the drop in
#: roomwatch_device_readings_dropped_total{reason="out_of_range"}.
RANGES: dict[str, tuple[float, float]] = {}


def _def(name: str, help_text: str, kind: str = "gauge", health: bool = False,
         valid: tuple[float, float] | None = None) -> str:
    if name in METRICS:
        raise ValueError(f"metric {name} defined twice")
    if kind == "counter" and not name.endswith("_total"):
        raise ValueError(f"counter {name} must end in _total")
    if valid is not None and not valid[0] < valid[1]:
        raise ValueError(f"metric {name}: range {valid} must be (low, high) with low < high")
    METRICS[name] = MetricDef(name, help_text, kind, valid)
    if health:
        HEALTH_METRICS.add(name)
    if valid is not None:
        RANGES[name] = (float(valid[0]), float(valid[1]))
    return name


def plausible(metric: str, value: float) -> bool:
    """Whether ``value`` lies in the physical range of ``metric`` (True for metrics without one)."""
    bounds = RANGES.get(metric)
    return bounds is None or bounds[0] <= value <= bounds[1]


# --- physical ranges (base units) ------------------------------------------------------
#: Room and equipment temperatures: an unheated store room in winter to a room on fire. A probe
#: that is not there reads -273 (0 K), 850 (a DS18B20's power-on value) or 3276.7: all outside.
TEMPERATURE_RANGE = (-40.0, 100.0)
#: Host hardware sensors (CPU package, disks): up to 150 °C, past a CPU's throttle point.
HOST_TEMPERATURE_RANGE = (-40.0, 150.0)
#: AC voltages: 0 V (mains failed) up to 480 V three-phase line-to-line, with margin. A card that
#: sends tenths of volts in a volts object (2313 for 231.3 V) lands outside and is dropped.
AC_VOLTAGE_RANGE = (0.0, 500.0)
#: Battery string voltages: 12 V for a small line-interactive unit, up to ±400 V strings (UPS5000,
#: Masterys) read as one figure (about 800 V); 1000 V leaves margin for nothing real above it.
DC_VOLTAGE_RANGE = (0.0, 1000.0)
#: Runtime estimates: up to four days. An idle Smart-UPS honestly estimates 30 hours; 9999 or
#: 65535 minutes (7 and 45 days) are cards saying "unknown".
RUNTIME_RANGE = (0.0, 4 * 86400.0)
#: Load: up to 250 % of the rating (an overload the UPS rides through for a second).
LOAD_RANGE = (0.0, 2.5)
RATIO = (0.0, 1.0)
BINARY = (0.0, 1.0)
#: A battery installed up to 50 years ago: anything older is a wrong date, not an old battery.
BATTERY_AGE_RANGE = (0.0, 50 * 365.25 * 86400)


def describe(name: str) -> MetricDef:
    """Definition of ``name``; unknown names (a newer agent) get a neutral gauge."""
    found = METRICS.get(name)
    if found is not None:
        return found
    if name.endswith("_total"):
        return MetricDef(name, "Counter reported by a roomwatch agent.", "counter")
    if name.endswith("_info"):
        return MetricDef(name, "Information reported by a roomwatch agent.", "info")
    return MetricDef(name, "Value reported by a roomwatch agent.", "gauge")


# --- UPS ---------------------------------------------------------------------
UPS_BATTERY_CHARGE = _def("roomwatch_ups_battery_charge_ratio", "UPS battery charge, 0..1.", valid=RATIO)
UPS_BATTERY_RUNTIME = _def("roomwatch_ups_battery_runtime_seconds", "Estimated UPS runtime left on battery, in seconds.",
                           valid=RUNTIME_RANGE)
UPS_ON_BATTERY = _def("roomwatch_ups_on_battery", "1 while mains has failed and the UPS runs on battery.", valid=BINARY)
UPS_BATTERY_LOW = _def("roomwatch_ups_battery_low", "1 when the UPS itself reports low battery.", valid=BINARY)
UPS_BATTERY_REPLACE = _def("roomwatch_ups_battery_replace_needed", "1 when the UPS asks for a battery replacement.",
                           valid=BINARY)
UPS_BATTERY_VOLTAGE = _def("roomwatch_ups_battery_voltage_volts", "UPS battery voltage.", valid=DC_VOLTAGE_RANGE)
UPS_BATTERY_TEMPERATURE = _def("roomwatch_ups_battery_temperature_celsius", "UPS battery temperature.",
                               valid=TEMPERATURE_RANGE)
UPS_INPUT_VOLTAGE = _def("roomwatch_ups_input_voltage_volts", "UPS input (mains) voltage.", valid=AC_VOLTAGE_RANGE)
UPS_OUTPUT_VOLTAGE = _def("roomwatch_ups_output_voltage_volts", "UPS output voltage.", valid=AC_VOLTAGE_RANGE)
UPS_LOAD = _def("roomwatch_ups_load_ratio", "UPS output load, 0..1.", valid=LOAD_RANGE)
UPS_BATTERY_AGE = _def("roomwatch_ups_battery_age_seconds", "Time since the UPS battery was installed or last replaced.",
                       valid=BATTERY_AGE_RANGE)
UPS_INFO = _def("roomwatch_ups_info", "UPS identity (manufacturer, model, serial, firmware as labels); always 1.", "info")

# --- UPS: NUT driver additions ----------------------------------------------------
UPS_TEMPERATURE = _def("roomwatch_ups_temperature_celsius", "UPS internal (cabinet or inverter) temperature.",
                       valid=TEMPERATURE_RANGE)
UPS_STATUS_FLAG = _def(
    "roomwatch_ups_status_flag", "1 for each status flag the UPS reports now (NUT ups.status tokens: OL, OB, LB, RB, "
    "BYPASS, CHRG, ...), in label flag; a flag not reported has no series.", valid=BINARY
)

# --- UPS: self-tests, measured battery health, shutdown sequence (issue 15) --------------------
UPS_SELF_TEST_IN_PROGRESS = _def(
    "roomwatch_ups_self_test_in_progress", "1 while the UPS runs a battery self-test (its on-battery is then not an outage).",
    valid=BINARY)
UPS_SELF_TEST_FAILED = _def(
    "roomwatch_ups_self_test_failed", "1 when the UPS's last battery self-test failed, 0 when it passed; absent when the "
    "UPS has no result.", valid=BINARY)
UPS_LAST_SELF_TEST = _def(
    "roomwatch_ups_last_self_test_timestamp_seconds", "Unix time the agent last started a scheduled self-test of the UPS.")
UPS_BATTERY_HEALTH = _def(
    "roomwatch_ups_battery_health_ratio", "Runtime the battery really delivered in the last measured outage, divided by "
    "the runtime the UPS predicted at its start (1 = as predicted).")
UPS_MEASURED_RUNTIME = _def(
    "roomwatch_ups_measured_runtime_seconds", "Full runtime the battery would deliver at the last measured outage's load, "
    "extrapolated from how fast it discharged.")
UPS_LAST_OUTAGE_RUNTIME = _def(
    "roomwatch_ups_last_outage_runtime_seconds", "How long the UPS ran on battery in its last outage.")
UPS_LAST_OUTAGE_END = _def(
    "roomwatch_ups_last_outage_timestamp_seconds", "Unix time the UPS's last outage ended (mains back or the agent's "
    "host shut down).")
UPS_SHUTDOWN_SEQUENCE = _def(
    "roomwatch_ups_shutdown_sequence_seconds", "Time the agent's shutdown action for this UPS needs from the critical "
    "reading to the end of the host's shutdown (confirmation, grace, secondaries' logout, poweroff).")

# --- environment ---------------------------------------------------------------
TEMPERATURE = _def("roomwatch_temperature_celsius", "Ambient temperature.", valid=TEMPERATURE_RANGE)
HUMIDITY = _def("roomwatch_humidity_ratio", "Relative humidity, 0..1.", valid=RATIO)
DOOR_OPEN = _def("roomwatch_door_open", "1 when the door is open, 0 when closed.", valid=BINARY)
WATER_LEAK = _def("roomwatch_water_leak_detected", "1 when a leak sensor is wet.", valid=BINARY)
SMOKE = _def("roomwatch_smoke_detected", "1 when a smoke sensor alarms.", valid=BINARY)

# --- dry contacts (SNMP environment monitors: APC, AVTECH Room Alert, HW-group Poseidon) ---
# A contact input is often wired to something the monitor cannot name (a door reed switch, a
# leak rope, an air-conditioner alarm relay): report what the device knows, and let the device's
# `contacts:` option say which contact is a door, a leak or smoke (see docs/snmp.md).
CONTACT_CLOSED = _def("roomwatch_contact_closed", "1 when a dry-contact input is closed, 0 when open.", valid=BINARY)
CONTACT_ALARM = _def(
    "roomwatch_contact_alarm", "1 when a dry-contact input is in the state its device calls alarm, 0 when normal.",
    valid=BINARY)

# --- device health (the agent adds these for every device) -----------------------
DEVICE_UP = _def("roomwatch_device_up", "1 when the last poll or message of the device succeeded in time.", health=True)
DEVICE_POLL_DURATION = _def("roomwatch_device_poll_duration_seconds", "Duration of the device's last poll.", health=True)
DEVICE_POLL_ERRORS = _def("roomwatch_device_poll_errors_total", "Polls of the device that failed or timed out.", "counter",
                          health=True)
DEVICE_READINGS_DROPPED = _def(
    "roomwatch_device_readings_dropped_total",
    "Readings of the device left out as implausible, by metric and reason (out_of_range: outside the "
    "quantity's physical range; sentinel: a value the device's profile calls \"no reading\"; invalid: not a "
    "number).", "counter", health=True)
DEVICE_POLL_SKIPPED = _def(
    "roomwatch_device_poll_skipped_total", "Polls skipped because the previous poll of the device was still running.", "counter",
    health=True,
)

# --- host (psutil) -------------------------------------------------------------------
HOST_CPU_USAGE = _def("roomwatch_host_cpu_usage_ratio", "Share of CPU time not idle since the previous poll, 0..1.",
                      valid=RATIO)
HOST_CPU_COUNT = _def("roomwatch_host_cpus", "Number of logical CPUs.")
HOST_LOAD1 = _def("roomwatch_host_load1", "1-minute load average.")
HOST_LOAD5 = _def("roomwatch_host_load5", "5-minute load average.")
HOST_LOAD15 = _def("roomwatch_host_load15", "15-minute load average.")
HOST_MEMORY_TOTAL = _def("roomwatch_host_memory_total_bytes", "Total physical memory.")
HOST_MEMORY_AVAILABLE = _def("roomwatch_host_memory_available_bytes", "Memory available to new programs without swapping.")
HOST_SWAP_USED = _def("roomwatch_host_swap_used_bytes", "Swap space in use.")
HOST_FS_SIZE = _def("roomwatch_host_filesystem_size_bytes", "Size of the filesystem.")
HOST_FS_AVAIL = _def("roomwatch_host_filesystem_avail_bytes", "Filesystem space available to unprivileged users.")
HOST_NET_RX = _def("roomwatch_host_network_receive_bytes_total", "Bytes received by the interface.", "counter")
HOST_NET_TX = _def("roomwatch_host_network_transmit_bytes_total", "Bytes sent by the interface.", "counter")
HOST_NET_RX_ERR = _def("roomwatch_host_network_receive_errors_total", "Receive errors on the interface.", "counter")
HOST_NET_TX_ERR = _def("roomwatch_host_network_transmit_errors_total", "Transmit errors on the interface.", "counter")
HOST_HW_TEMPERATURE = _def("roomwatch_host_hardware_temperature_celsius", "Hardware sensor temperature (CPU, board, disk).",
                           valid=HOST_TEMPERATURE_RANGE)
HOST_BOOT_TIME = _def("roomwatch_host_boot_time_seconds", "Unix time the host booted.")

# --- agent self-monitoring ----------------------------------------------------------------
AGENT_BUILD_INFO = _def("roomwatch_agent_build_info", "Agent version; always 1.", "gauge")
AGENT_PUSH_BATCHES = _def("roomwatch_agent_push_batches_total", "Push attempts to the collector by result.", "counter")
AGENT_PUSH_QUEUE = _def("roomwatch_agent_push_queue_batches", "Batches waiting to be pushed to the collector.")
AGENT_PUSH_DROPPED = _def(
    "roomwatch_agent_push_dropped_samples_total", "Samples dropped because the push queue was full.", "counter"
)
AGENT_LAST_PUSH_OK = _def(
    "roomwatch_agent_last_successful_push_timestamp_seconds", "Unix time of the last push the collector accepted."
)
AGENT_RESIDENT_MEMORY = _def("roomwatch_agent_resident_memory_bytes", "Resident memory of the agent process.")
AGENT_CPU_SECONDS = _def("roomwatch_agent_cpu_seconds_total", "CPU time used by the agent process.", "counter")

# --- agent NUT server (issue 15) -------------------------------------------------------------
AGENT_NUT_CLIENTS = _def("roomwatch_agent_nut_server_clients", "Clients connected to the agent's NUT server.")
AGENT_NUT_REFUSED = _def(
    "roomwatch_agent_nut_server_refused_total", "NUT server connections closed or commands refused by reason "
    "(max_clients, line_too_long, idle, access_denied, guessing, slow_reader, tls).", "counter")

AGENT_SNMP_TRAPS = _def(
    "roomwatch_snmp_traps_total",
    "SNMP notifications the agent's trap listener received, by result (accepted, unknown_sender, bad_community, "
    "bad_auth, malformed).",
    "counter",
)

# --- agent spool (store-and-forward; reliability) -------------------------------------------
AGENT_SPOOL_BATCHES = _def("roomwatch_agent_spool_batches", "Batches in the agent's spool, not yet accepted by a collector.")
AGENT_SPOOL_SAMPLES = _def("roomwatch_agent_spool_samples", "Samples in the agent's spool, not yet accepted by a collector.")
AGENT_SPOOL_BYTES = _def("roomwatch_agent_spool_bytes", "Stored (compressed) size of the batches in the agent's spool.")
AGENT_SPOOL_OLDEST_AGE = _def(
    "roomwatch_agent_spool_oldest_age_seconds", "Age of the oldest sample or event waiting in the agent's spool."
)
AGENT_SPOOL_DROPPED = _def(
    "roomwatch_agent_spool_dropped_total",
    "Samples and events (kind) that left the agent's spool undelivered, by reason (cap, unwritable, rejected, "
    "unreadable).",
    "counter",
)

# --- collector ---------------------------------------------------------------------
AGENT_UP = _def("roomwatch_agent_up", "1 while the agent pushes in time.")
AGENT_LAST_PUSH = _def("roomwatch_agent_last_push_timestamp_seconds", "Unix time of the agent's last accepted push.")
ALERTS = _def("roomwatch_alerts", "Active alerts by alertname, severity and state.")
COLLECTOR_BUILD_INFO = _def("roomwatch_collector_build_info", "Collector version; always 1.")
COLLECTOR_SERIES = _def("roomwatch_collector_series", "Series currently held as current values.")
COLLECTOR_PUSHES = _def("roomwatch_collector_pushes_total", "Push requests by HTTP status code.", "counter")
COLLECTOR_SAMPLES = _def("roomwatch_collector_samples_received_total", "Samples accepted from agents.", "counter")
COLLECTOR_EVENTS = _def("roomwatch_collector_events_received_total", "Events accepted from agents.", "counter")
COLLECTOR_FUTURE_STAMPS = _def("roomwatch_collector_future_timestamps_total",
                               "Samples and events stamped more than 1 min ahead of the collector's clock (after clock-skew "
                               "correction), stored at their receive time instead.", "counter")
COLLECTOR_PAST_STAMPS = _def("roomwatch_collector_past_timestamps_total",
                             "Samples and events stamped before 2000 even after clock-skew correction (a clock that "
                             "started at 1970), stored at their receive time instead.", "counter")
COLLECTOR_RESIDENT_MEMORY = _def("roomwatch_collector_resident_memory_bytes", "Resident memory of the collector process.")
COLLECTOR_CPU_SECONDS = _def("roomwatch_collector_cpu_seconds_total", "CPU time used by the collector process.", "counter")
COLLECTOR_SAMPLES_REJECTED = _def("roomwatch_collector_samples_rejected_total",
                                  "Samples of accepted pushes that were not stored, by agent and reason (series_limit, "
                                  "new_series_limit, reserved_name, name_collision).", "counter")

# --- collector store, history, remote write (reliability) ----------------------------------
COLLECTOR_STORE_COMMITS = _def("roomwatch_collector_store_commits_total",
                               "Transactions committed by the ingest store (each holds one or more pushes).", "counter")
COLLECTOR_STORE_FAILURES = _def("roomwatch_collector_store_failures_total",
                                "Ingest store commits that failed (those pushes got 503 and are retried).", "counter")
COLLECTOR_STORE_COMMIT_SECONDS = _def("roomwatch_collector_store_commit_seconds_total",
                                      "Time spent committing pushes to the store.", "counter")
COLLECTOR_HISTORY_PRUNED = _def("roomwatch_collector_history_pruned_samples_total",
                                "History samples deleted because they were older than history.retention.", "counter")
COLLECTOR_RW_SAMPLES = _def("roomwatch_collector_remote_write_samples_total",
                            "Samples handled by a remote-write endpoint, by result (sent, rejected, dropped).", "counter")
COLLECTOR_RW_PENDING = _def("roomwatch_collector_remote_write_pending_samples",
                            "Samples queued for a remote-write endpoint.")
COLLECTOR_RW_LAST_SUCCESS = _def("roomwatch_collector_remote_write_last_success_timestamp_seconds",
                                 "Unix time of the last request a remote-write endpoint accepted.")

# --- alerting (collector) ------------------------------------------------------------
NOTIFICATION_CHANNEL_UP = _def(
    "roomwatch_notification_channel_up", "0 while the notification channel keeps failing to deliver, else 1."
)
NOTIFICATIONS = _def(
    "roomwatch_notifications_total", "Notification delivery attempts by channel and outcome (delivered, partial: "
    "some recipients can never get it, retry, give_up, expired).", "counter"
)
NOTIFICATIONS_PENDING = _def("roomwatch_notifications_pending", "Notifications queued and not yet delivered, by channel.")
SILENCES = _def("roomwatch_silences", "Silences by state (active, pending).")
ACKNOWLEDGEMENTS = _def("roomwatch_acknowledgements_total",
                        "Alert episodes acknowledged, by how (login, link, sms, dingtalk).", "counter")
ACK_LINKS_REFUSED = _def("roomwatch_ack_links_refused_total",
                         "Acknowledge links refused, by reason (bad_signature, expired, malformed, gone, throttled).",
                         "counter")
SMS_REPLIES = _def("roomwatch_sms_replies_total",
                   "SMS received by a modem, by result (acknowledged, answered, ignored: not from a known number).",
                   "counter")
IM_CALLBACKS = _def("roomwatch_im_callbacks_total",
                    "IM robot callbacks received, by IM and result (acknowledged, answered, ignored, refused).", "counter")
MODEM_SIGNAL = _def("roomwatch_modem_signal_dbm", "GSM/4G modem signal at its last idle check (AT+CSQ), in dBm.")
MODEM_REGISTERED = _def("roomwatch_modem_registered",
                        "1 while the modem was registered on a network (AT+CREG? home or roaming) at its last check.")
MODEM_CHECKED = _def("roomwatch_modem_last_check_timestamp_seconds", "Unix time of the modem's last idle check.")
HEARTBEATS = _def("roomwatch_heartbeats_total",
                  "Heartbeats sent by the collector, by kind (daily, ping, collector) and result (ok, failed).", "counter")

# --- state metrics whose change is an event, pushed at once ------------------------------
#: metric → (event type when it becomes 1, event type when it returns to 0)
STATE_EVENTS: dict[str, tuple[str, str]] = {
    DOOR_OPEN: ("door_open", "door_close"),
    WATER_LEAK: ("water_leak", "water_leak_clear"),
    SMOKE: ("smoke", "smoke_clear"),
    UPS_ON_BATTERY: ("ups_on_battery", "ups_on_mains"),
    UPS_BATTERY_LOW: ("ups_battery_low", "ups_battery_ok"),
}

# --- room sensors: the sensor's own state, and MQTT ingest health (issue 4) ---------------
SENSOR_BATTERY = _def("roomwatch_sensor_battery_ratio", "Battery level the sensor reports, 0..1.", valid=RATIO)
SENSOR_LINK_QUALITY = _def(
    "roomwatch_sensor_link_quality", "Radio link quality the sensor reports (Zigbee LQI, 0..255; higher is better).",
    valid=(0.0, 255.0))
SENSOR_SIGNAL = _def("roomwatch_sensor_signal_strength_dbm", "Wi-Fi signal strength the sensor reports (RSSI), in dBm.",
                     valid=(-130.0, 0.0))
MQTT_MESSAGES = _def("roomwatch_mqtt_messages_total",
                     "MQTT messages received for the device, by result (ok, ignored, invalid, availability).",
                     "counter", health=True)
MQTT_INVALID = _def("roomwatch_mqtt_messages_invalid_total",
                    "MQTT messages (or fields of them) dropped as invalid, by reason.", "counter", health=True)


# --- names an agent may not write ---------------------------------------------------------
#: The collector's own series: an agent sending one of these names is refused (it would
#: fake the collector's view of agents, alerts and itself).
_COLLECTOR_OWNED = frozenset({AGENT_UP, AGENT_LAST_PUSH, ALERTS, NOTIFICATION_CHANNEL_UP, NOTIFICATIONS,
                              NOTIFICATIONS_PENDING, SILENCES})
_COLLECTOR_PREFIX = "roomwatch_collector_"


def collector_owned(name: str) -> bool:
    """True for a name only the collector writes (``roomwatch_collector_*``, ``roomwatch_agent_up`` …)."""
    return name.startswith(_COLLECTOR_PREFIX) or name in _COLLECTOR_OWNED


#: Suffixes OpenMetrics gives the samples of one family (counter: _total, _created; histogram and
#: summary: _count, _sum, _bucket; gauge histogram: _gcount, _gsum; info: _info).
_FAMILY_SUFFIXES = ("_total", "_created", "_count", "_sum", "_bucket", "_gcount", "_gsum", "_info")


def family_base(name: str) -> str:
    """The OpenMetrics family a sample name belongs to: ``x_total`` → ``x``; two names with one base collide."""
    for suffix in _FAMILY_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name
