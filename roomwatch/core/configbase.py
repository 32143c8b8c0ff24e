"""Shared configuration machinery: YAML with line numbers, durations, secrets, plain-word errors.

Agent and collector each declare their schema once as pydantic models built on
:class:`Model`; this module loads a YAML file into such a model and turns every
problem into ``file:line: key: what is wrong`` lines, all reported together.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    SecretStr,
    ValidationError,
    model_validator,
)

__all__ = [
    "ByteSize",
    "ConfigError",
    "Duration",
    "HostPort",
    "Labels",
    "Model",
    "Problem",
    "Secret",
    "TimeZoneName",
    "format_duration",
    "load_model",
    "load_yaml",
    "parse_bytes",
    "parse_duration",
    "parse_hostport",
    "weak_secrets",
]

# ---------------------------------------------------------------- durations

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: Any) -> float:
    """Parse ``10s``, ``5m``, ``1h30m``, ``250ms`` into seconds (Prometheus-style units)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("expected a duration such as 10s, 5m or 1h")
    if isinstance(value, (int, float)):
        if value == 0:
            return 0.0
        # A bare number is ambiguous (seconds? milliseconds?): make the user say.
        raise ValueError(f"{value!r} has no unit; write a duration such as {value}s or {value}m")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration; use a number with a unit: ms, s, m, h, d, w (e.g. 10s, 5m, 1h30m)")
    return total


def format_duration(seconds: float) -> str:
    """Inverse of :func:`parse_duration` for messages and generated files."""
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


#: A duration in seconds, written in YAML as ``10s``/``5m``/``1h``.
Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]


def parse_hostport(value: Any, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``127.0.0.1:9640``, ``:9640``, ``[::1]:9640`` → (host, port)."""
    if not isinstance(value, str):
        raise ValueError("expected host:port, e.g. 127.0.0.1:9640")
    text = value.strip()
    host, sep, port_s = text.rpartition(":")
    if not sep or not port_s.isdigit():
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:9640)")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0..65535")
    host = host.strip("[]") or default_host
    return host, port


def _check_hostport(value: Any) -> str:
    parse_hostport(value)
    return str(value).strip()


def _check_timezone(value: Any) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(value, str):
        raise ValueError("expected a time zone name such as Asia/Shanghai")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Shanghai") from None
    return value


_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Label names roomwatch sets itself, or that Prometheus gives a meaning to.
RESERVED_LABELS = frozenset({"agent", "site", "room", "device", "driver", "le", "quantile"})


def _check_labels(value: Any) -> Any:
    if not isinstance(value, dict):
        return value  # pydantic reports the type
    for name, text in value.items():
        if not isinstance(name, str) or not _LABEL_NAME_RE.match(name) or name.startswith("__"):
            raise ValueError(f"{name!r} is not a valid label name (letters, digits and _; not starting with a digit or __)")
        if name in RESERVED_LABELS:
            raise ValueError(f"label {name!r} is set by roomwatch itself (or reserved by Prometheus); choose another name")
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            value = {**value, name: str(text)}  # rack: 3 means "3"
    return value


#: Extra labels from the config: valid Prometheus names, none that roomwatch sets itself.
Labels = Annotated[dict[str, str], BeforeValidator(_check_labels)]

#: An IANA time zone name (``Asia/Shanghai``), checked at load time.
TimeZoneName = Annotated[str, BeforeValidator(_check_timezone)]

#: ``host:port`` string, checked at load time.
HostPort = Annotated[str, BeforeValidator(_check_hostport)]

# ------------------------------------------------------------------ sizes

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024, "m": 10**6, "mb": 10**6,
               "mib": 2**20, "mi": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "gi": 2**30}


def parse_bytes(value: Any) -> int:
    """``8MiB``, ``512KB``, ``1048576`` → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str) or not (m := _SIZE_RE.match(value)):
        raise ValueError(f"{value!r} is not a size; write e.g. 8MiB, 512KiB or a number of bytes")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])


#: Bytes, written in YAML as ``512KiB``, ``8MiB`` or a plain number of bytes.
ByteSize = Annotated[int, BeforeValidator(parse_bytes)]

#: A secret string. Accepts ``key: value``, ``key: ${ENV}`` or ``key_file: /path``; never printed.
Secret = SecretStr


# ------------------------------------------------------------------ models


#: Every key of any config section that holds a secret (and its ``_file`` form): an error about one
#: never shows the value that was given (it may be the secret with a typo).
SECRET_KEYS: set[str] = set()


class Model(BaseModel):
    """Base for every config section: unknown keys are errors; ``<secret>_file`` is understood."""

    # defer_build: a model's validator is built on first use, so the agent pays (in memory)
    # only for the driver models its config actually uses.
    model_config = ConfigDict(extra="forbid", validate_default=False, populate_by_name=True, defer_build=True)
    _secret_fields: ClassVar[frozenset[str]] = frozenset()

    def extra_checks(self) -> list[tuple[tuple[Any, ...], str]]:
        """Cross-field checks pydantic cannot express, as (key path, message); none by default."""
        return []

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        secret = set()
        for name, field in cls.model_fields.items():
            ann = field.annotation
            if ann is SecretStr or (hasattr(ann, "__args__") and SecretStr in getattr(ann, "__args__", ())):
                secret.add(name)
        cls._secret_fields = frozenset(secret)
        SECRET_KEYS.update(secret)
        SECRET_KEYS.update(f"{name}_file" for name in secret)

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not cls._secret_fields:
            return data
        for name in cls._secret_fields:
            key = f"{name}_file"
            if key not in data:
                continue
            data = dict(data)
            path = data.pop(key)
            if data.get(name) is not None:
                raise ValueError(f"give either {name} or {key}, not both")
            if not isinstance(path, str):
                raise ValueError(f"{key} must be a file path")
            try:
                data[name] = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
        return data


# ------------------------------------------------------------- YAML + lines


@dataclass(frozen=True, slots=True)
class Problem:
    """One configuration problem, located in the file."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """Raised with every problem of a file; ``str()`` is ready to print."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Located:
    """Parsed YAML plus where each key/item was in the file."""

    def __init__(self, file: str, loader: yaml.SafeLoader | None = None):
        self.file = file
        self.loader = loader
        self.lines: dict[tuple[Any, ...], int] = {}
        self.problems: list[Problem] = []

    def convert(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)  # a key's own line wins over its value's
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.convert(key_node, path + ("<key>",))
                if isinstance(key, (list, dict)):
                    self._problem(path, "a mapping key must be a plain word", key_node.start_mark.line + 1)
                    continue
                if key == "<<":  # YAML merge keys: let anchors/aliases reduce repetition
                    merged = self.convert(value_node, path + (key,))
                    for item in merged if isinstance(merged, list) else [merged]:
                        if isinstance(item, dict):
                            for k, v in item.items():
                                out.setdefault(k, v)
                    continue
                if key in out:
                    self._problem(path + (key,), "this key appears twice", key_node.start_mark.line + 1)
                self.lines[path + (key,)] = key_node.start_mark.line + 1
                out[key] = self.convert(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, path + (i,)) for i, item in enumerate(node.value)]
        assert self.loader is not None
        value = self.loader.construct_object(node, deep=True)
        if isinstance(value, str) and "$" in value:
            value = self._expand(value, path, node.start_mark.line + 1)
        return value

    def _expand(self, text: str, path: tuple[Any, ...], line: int) -> str:
        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            self._problem(path, f"environment variable {name} is not set (write ${{{name}:-default}} for a default)", line)
            return ""

        return _ENV_RE.sub(repl, text)

    def _problem(self, path: tuple[Any, ...], message: str, line: int | None = None) -> None:
        self.problems.append(Problem(self.file, line or self.line_of(path), dotted(path), message))

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)


def dotted(path: tuple[Any, ...] | list[Any]) -> str:
    """('devices', 2, 'port') → ``devices[2].port``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def load_yaml(path: str | os.PathLike[str]) -> tuple[Any, _Located]:
    """Read YAML keeping line numbers; raises :class:`ConfigError` on syntax errors."""
    file = str(path)
    loc = _Located(file)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(file, None, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(file, None, "", f"cannot read the file: {exc}")]) from None
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # e.g. a control character: the reader refuses before parsing
        raise ConfigError([Problem(file, None, "", f"YAML syntax error: {exc}")]) from None
    loc.loader = loader
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = exc.problem or str(exc)
        raise ConfigError([Problem(file, line, "", f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, None, "", f"YAML syntax error: {exc}")]) from None
    if node is None:
        loader.dispose()
        return {}, loc
    try:
        data = loc.convert(node, ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise ConfigError([Problem(file, mark.line + 1 if mark else None, "", f"YAML error: {exc.problem}")]) from None
    finally:
        loader.dispose()
        loc.loader = None
    if loc.problems:
        raise ConfigError(loc.problems)
    return data, loc


M = TypeVar("M", bound=Model)


def _walk_loc(data: Any, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], bool]:
    """Map a pydantic error location onto the data path, skipping union tags pydantic inserts."""
    path: list[Any] = []
    cur = data
    found = True
    for part in loc:
        if (isinstance(cur, dict) and part in cur) or (isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)):
            path.append(part)
            cur = cur[part]
        elif isinstance(cur, dict) and isinstance(part, str) and part not in cur and part.endswith("]"):
            continue  # e.g. 'function-after[...]' wrappers
        elif isinstance(cur, dict) and isinstance(part, str):
            # A union/discriminator tag ('snmp') or a missing key: keep it only if it is the last part
            # and not the entry's own tag (a model-level check of a {driver: nut} entry ends in 'nut').
            if part is loc[-1] and part not in cur.values():
                path.append(part)
                found = False
            continue
        else:
            found = False
            break
    return tuple(path), found


def _plain_message(err: Mapping[str, Any]) -> str:
    """Say what pydantic found wrong in words a sysadmin reads at 3 a.m. (never a secret's value)."""
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    got = err.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    if any(isinstance(part, str) and part in SECRET_KEYS for part in err.get("loc", ())):
        shown = "a value (not shown: it is a secret)"
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see the example config for valid keys)"
    if kind == "missing":
        return "required key is missing"
    tag_key = str(ctx.get("discriminator", "type")).strip("'")
    if kind == "union_tag_invalid":
        return f"unknown {tag_key} {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"{tag_key} is required"
    if kind in {"int_parsing", "int_type", "int_from_float"}:
        return f"expected a whole number, got {shown}"
    if kind in {"float_parsing", "float_type"}:
        return f"expected a number, got {shown}"
    if kind in {"bool_parsing", "bool_type"}:
        return f"expected true or false, got {shown}"
    if kind == "string_type":
        return f"expected text, got {shown}"
    if kind in {"list_type"}:
        return f"expected a list, got {shown}"
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return f"expected a mapping of keys, got {shown}"
    if kind == "literal_error":
        return f"got {shown}; expected one of {ctx.get('expected')}"
    if kind == "enum":
        return f"got {shown}; expected one of {ctx.get('expected')}"
    msg = str(err.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg


def validation_problems(exc: ValidationError, data: Any, loc: _Located) -> list[Problem]:
    """Turn a pydantic ValidationError into located problems (deduplicated)."""
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        path, _ = _walk_loc(data, tuple(err.get("loc", ())))
        if err.get("type") == "union_tag_invalid":
            # A discriminated union (devices once two drivers exist) reports a bad tag at the item;
            # point at the tag key itself, where the user made the mistake.
            tag = str((err.get("ctx") or {}).get("discriminator", "")).strip("'")
            target: Any = data
            for part in path:
                target = target[part] if isinstance(target, (dict, list)) else None
            if isinstance(target, dict) and tag in target:
                path = (*path, tag)
        message = _plain_message(err)
        key = dotted(path)
        if (key, message) in seen:
            continue
        seen.add((key, message))
        problems.append(Problem(loc.file, loc.line_of(path), key, message))
    return problems


def load_model(path: str | os.PathLike[str], model: type[M], data: Any = None, located: _Located | None = None) -> M:
    """Load and validate a YAML file into ``model``; raise :class:`ConfigError` with every problem."""
    if data is None or located is None:
        data, located = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError([Problem(str(path), 1, "", "the file must be a mapping of keys (key: value)")])
    try:
        cfg = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, data, located)) from None
    # Cross-field checks run only on a valid model, and are located like pydantic's errors.
    problems = [Problem(located.file, located.line_of(p), dotted(p), m) for p, m in cfg.extra_checks()]
    if problems:
        raise ConfigError(problems)
    return cfg


def iter_secret_values(model: BaseModel) -> Iterator[str]:
    """Every secret in a loaded config, so log filters can redact them."""
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        if isinstance(value, SecretStr):
            if value.get_secret_value():
                yield value.get_secret_value()
        elif isinstance(value, BaseModel):
            yield from iter_secret_values(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, BaseModel):
                    yield from iter_secret_values(item)
        elif isinstance(value, dict):
            for item in value.values():
                if isinstance(item, BaseModel):
                    yield from iter_secret_values(item)


#: Values from documentation, tutorials and examples, which anyone can guess: the token of the first example
#: config, then "secret-token", "s3cret", "secret", "changeme", "change-me", "change_me", "token", "mytoken",
#: "password", "passw0rd", "admin", "123456", "12345678", "roomwatch", "example", "test", "xxxxxxxx" — kept as
#: their sha256 (the ``token_hash`` form), so that no installed file carries the old example token itself
#: (docs/install.md: an install is checked for it).
WELL_KNOWN_TOKEN_HASHES = frozenset({
    "sha256:a81e611a041b13f078bf8ebe5dab4d4fd63fcc5594661c918bec093a2f416a7e",
    "sha256:930bbdc51b6aed5c2a5678fd6e28dee7a05e8a4b643cfc0b4427c3efb86c0d94",
    "sha256:1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0",
    "sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
    "sha256:057ba03d6c44104863dc7361fe4578965d1887360f90a0895882e58a6248fc86",
    "sha256:e2186dbdb1bb4193608605e84f33208765b5693b55edd4f730a719a100eeea6f",
    "sha256:fb86fb757d1241d512865070e05ccb5d17dfaa11a4b2ca04b89bacad17530ad4",
    "sha256:3c469e9d6c5875d37a43f353d4f88e61fcf812c66eee3457465a40b0da4153e0",
    "sha256:1a17ea3569204d6c4114794ca73fa257457fc0612928c7bf024801659b77dba8",
    "sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
    "sha256:8f0e2f76e22b43e2855189877e7dc1e1e7d98c226c95db247cd1d547928334a9",
    "sha256:8c6976e5b5410415bde908bd4dee15dfb167a9c873fc4bb8a81f6f2ab448a918",
    "sha256:8d969eef6ecad3c29a3a629280e686cf0c3f5d5a86aff3ca12020c923adc6c92",
    "sha256:ef797c8118f02dfb649607dd5d3f8c7623048c9c063d532cc95c5ed7a898a64f",
    "sha256:9ae650aba5699106be998935ca631a6821a589104229cc98639e0c1b78554180",
    "sha256:50d858e0985ecc7f60418aaf0cc5ab587f42c2570a884095a9e8ccacd0f6545c",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "sha256:4cf0c1012276f46af31e44d2fbb03ae7af56f03c9996eb9452b99b3e6273698e",
})
#: The ``token_hash`` the example collector file ships: it matches no token, so the example accepts no push.
PLACEHOLDER_TOKEN_HASH = "sha256:" + "0" * 64
#: A token shorter than this is guessable over the network despite the rate limits (gen-token makes 43).
MIN_TOKEN_LENGTH = 16


def _sha256(value: str) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def _weak(value: str) -> str | None:
    if _sha256(value.strip().lower()) in WELL_KNOWN_TOKEN_HASHES:
        return "is a value from the documentation's examples, which anyone can guess"
    if len(value) < MIN_TOKEN_LENGTH:
        return f"is shorter than {MIN_TOKEN_LENGTH} characters"
    return None


def weak_secrets(model: BaseModel, path: tuple[Any, ...] = ()) -> list[str]:
    """Warnings (key path: why) for agent tokens that are short or well known; values are never shown.

    Only ``token`` keys (and ``token_hash``, against the hashes of the well-known values) are looked at:
    other secrets (SMS keys, passwords) are issued by their services.
    """
    out: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        where = dotted((*path, name))
        if name == "token" and isinstance(value, SecretStr) and (why := _weak(value.get_secret_value())):
            out.append(f"{where} {why}: anyone on the network could push as this agent; "
                       "make one with `roomwatch gen-token`")
        elif name == "token_hash" and value == PLACEHOLDER_TOKEN_HASH:
            out.append(f"{where} is the example's placeholder: no agent can push with it; put the token_hash "
                       "`roomwatch gen-token` prints (and the token into the agent's file)")
        elif name == "token_hash" and isinstance(value, str) and value in WELL_KNOWN_TOKEN_HASHES:
            out.append(f"{where} is the hash of a value from the documentation's examples: anyone could push as "
                       "this agent; make a token with `roomwatch gen-token`")
        elif isinstance(value, BaseModel):
            out.extend(weak_secrets(value, (*path, name)))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    out.extend(weak_secrets(item, (*path, name, i)))
    return out
