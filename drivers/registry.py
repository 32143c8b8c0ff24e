"""Driver registry: one map from driver name to class, filled when driver modules import."""

from __future__ import annotations

import importlib

from roomwatch.drivers.base import Driver

__all__ = ["get", "load_builtin", "names", "register", "registered"]

_DRIVERS: dict[str, type[Driver]] = {}


def register(cls: type[Driver]) -> type[Driver]:
    """Class decorator: make ``cls`` available under ``cls.name``; duplicates are a bug."""
    name = cls.name
    if name in _DRIVERS and _DRIVERS[name] is not cls:
        raise ValueError(f"driver {name!r} registered twice ({_DRIVERS[name].__module__} and {cls.__module__})")
    fields = cls.config_model.model_fields
    if "driver" not in fields or fields["driver"].annotation is str:
        raise ValueError(f"{cls.__name__}.config_model must declare driver: Literal[{name!r}]")
    _DRIVERS[name] = cls
    return cls


def get(name: str) -> type[Driver]:
    """The driver class for ``name``, importing a built-in driver's module on first use."""
    if name not in _DRIVERS:
        from roomwatch.drivers.all import BUILTIN

        if name in BUILTIN:
            importlib.import_module(BUILTIN[name])
    try:
        return _DRIVERS[name]
    except KeyError:
        raise KeyError(f"unknown driver {name!r}; known: {', '.join(names())}") from None


def names() -> list[str]:
    """Every driver name: registered ones and built-in ones not imported yet."""
    from roomwatch.drivers.all import BUILTIN

    return sorted(set(_DRIVERS) | set(BUILTIN))


def registered() -> dict[str, type[Driver]]:
    """A copy of the registry (name → class), after importing every built-in driver."""
    load_builtin()
    return dict(_DRIVERS)


def load_builtin() -> None:
    """Import every built-in driver module (each registers itself)."""
    from roomwatch.drivers.all import BUILTIN

    for module in BUILTIN.values():
        importlib.import_module(module)
