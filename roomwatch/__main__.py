"""``python -m roomwatch`` is the ``roomwatch`` command."""

from roomwatch.cli import main

raise SystemExit(main())
