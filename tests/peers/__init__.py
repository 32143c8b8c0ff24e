"""Real peer programs for tests (Prometheus, mosquitto, snmpsim, upsd, ...), one module each.

Each module exposes a pytest fixture; a test imports the fixture by name.
Every peer binds 127.0.0.1 on an ephemeral port, runs in its own temp dir and
is stopped by the fixture that started it.
"""
