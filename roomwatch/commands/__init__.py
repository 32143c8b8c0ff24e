"""Command bodies that combine layers (collector config + channels …); :mod:`roomwatch.cli` dispatches to them."""
