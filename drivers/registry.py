"""Driver registry: one map from driver name to class, filled when driver modules import."""

from __future__ import annotations

from drivers.base import Driver

__all__ = ["get", "names", "register", "registered"]

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
    """The driver class for ``name``; KeyError names the known drivers."""
    try:
        return _DRIVERS[name]
    except KeyError:
        raise KeyError(f"unknown driver {name!r}; known: {', '.join(sorted(_DRIVERS))}") from None


def names() -> list[str]:
    return sorted(_DRIVERS)


def registered() -> dict[str, type[Driver]]:
    """A copy of the registry (name → class)."""
    return dict(_DRIVERS)
