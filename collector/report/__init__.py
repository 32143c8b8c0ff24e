"""The daily inspection report (巡检日报): per room, the last 24 hours in figures.

* :mod:`roomwatch.collector.report.config` — the ``report:`` section of the collector file;
* :mod:`roomwatch.collector.report.sources` — where the figures come from (history store, alert history);
* :mod:`roomwatch.collector.report.compute` — the figures, from plain series and alert episodes;
* :mod:`roomwatch.collector.report.render` — text for channels, HTML for ``/report``;
* :mod:`roomwatch.collector.report.service` — the daily schedule, sending, the ``/report`` page;
* :mod:`roomwatch.collector.report.cli` — ``roomwatch report``.

Kept import-free here so the config schema can import the config module cheaply.
"""
