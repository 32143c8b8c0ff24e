"""The shared ground of roomwatch: what agent, collector, alerts and drivers all stand on.

Config machinery (:mod:`.configbase`), the push wire format (:mod:`.wire`), metric
exposition (:mod:`.exposition`) and vocabulary (:mod:`.vocabulary`), SQLite helpers
(:mod:`.sqlite`), logging, TLS, systemd notification and the fallback-notice format.
Nothing here imports ``roomwatch.agent``, ``roomwatch.collector``, ``roomwatch.alerts``
or ``roomwatch.drivers`` (tests/test_layers.py checks it).
"""
