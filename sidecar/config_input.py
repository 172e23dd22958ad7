"""The config file as input: its bytes, its YAML and its durations, read so that any file
gives a clear problem naming where it is, never a traceback.

The file must be UTF-8. Its YAML is first walked as a stream of events (read without
recursion) and refused when it nests deeper than any config does, which would overflow
the stack of the YAML reader, or holds an integer too long for Python to read. Durations
lie between 1 ms and 365 days: a longer one is a typo (309 digits are infinity), a
shorter one would turn a timer into a busy loop.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import AfterValidator

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MIN_DURATION_S, MAX_DURATION_S = 0.001, 365 * 86400.0
#: The config is a few levels deep; far deeper YAML is refused before it is built.
MAX_YAML_DEPTH = 32
#: Python reads at most this many decimal digits as an integer.
_MAX_INT_DIGITS = 4300
_LONG_INT = re.compile(rf"[-+]?[0-9_]{{{_MAX_INT_DIGITS + 1},}}")


class UnreadableConfig(Exception):
    """The file cannot be read as YAML; ``problem`` says where and why."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def parse_duration(value: Any) -> float:
    """``90s``, ``5m``, ``1h30m``, ``1d`` -> seconds. A bare number has no unit and is refused."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"expected a duration with a unit such as 90s, 5m, 1h, 1d; got {value!r}")
    text = value.strip()
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {short(value)}: use 90s, 5m, 1h, 1d (or 1h30m)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"duration {short(value)} must be greater than zero")
    if seconds < MIN_DURATION_S:
        raise ValueError(f"duration {short(value)} is shorter than 1ms")
    if not seconds <= MAX_DURATION_S:  # also infinity, which 309 digits become
        raise ValueError(f"duration {short(value)} is longer than 365 days")
    return seconds


def at_least(seconds: float, why: str) -> AfterValidator:
    """A duration's lower bound, with the reason in its error."""

    def check(value: float) -> float:
        if value < seconds:
            raise ValueError(f"must be at least {seconds:g}s: {why}")
        return value

    return AfterValidator(check)


def short(value: str) -> str:
    """A value for an error message, cut short when it is long."""
    return repr(value) if len(value) <= 40 else repr(value[:30] + "...") + f" ({len(value)} chars)"


def yaml_path(loc: tuple[int | str, ...]) -> str:
    """``accounts[0].probe.peer``: where a value is, as the YAML spells it."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def read_yaml(path: Path) -> Any:
    """The file's YAML as Python values. Raises :class:`OSError` when it cannot be read,
    :class:`UnreadableConfig` when it is not UTF-8 or not YAML a config can be."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableConfig(
            f"byte {exc.start}: not UTF-8 text (the config must be UTF-8 YAML)"
        ) from None
    try:
        problem = _shape_problem(text)
        if problem is not None:
            raise UnreadableConfig(problem)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UnreadableConfig(f"{where}not valid YAML: {problem}") from None


def _shape_problem(text: str) -> str | None:
    """Nesting deeper than :data:`MAX_YAML_DEPTH`, or an integer too long to read, with
    where it is; found on the YAML's events. Raises :class:`yaml.YAMLError`."""
    opened: list[list[Any]] = []  # per collection: [a mapping, key or index, a key is next]
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionEndEvent):
            opened.pop()
        elif isinstance(event, yaml.NodeEvent):
            top: list[Any] = opened[-1] if opened else [True, None, False]
            if not top[0]:
                top[1] += 1  # the next item of a sequence
            elif top[2]:
                top[1] = getattr(event, "value", "?")  # a mapping's key
            if isinstance(event, yaml.CollectionStartEvent):
                if len(opened) >= MAX_YAML_DEPTH:
                    where = yaml_path(tuple(o[1] for o in opened[:3]))
                    return f"{where}...: nested more than {MAX_YAML_DEPTH} levels deep"
                opened.append([isinstance(event, yaml.MappingStartEvent), -1, True])
                continue
            value = getattr(event, "value", "")
            if getattr(event, "style", "") is None and _LONG_INT.fullmatch(value):
                keyed = opened[:-1] if top[0] and top[2] else opened  # a key: where it is
                where = yaml_path(tuple(o[1] for o in keyed))
                return f"{where}: a number of {sum(c.isdigit() for c in value)} digits is too long"
        else:
            continue  # the stream's and the documents' own events
        if opened and opened[-1][0]:  # in a mapping, a value comes after a key, and so on
            opened[-1][2] = not opened[-1][2]
    return None
