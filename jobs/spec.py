"""Pure rules for job specs: commands, parameters, env names, sweeps. No database, no engine."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO

from django.core.exceptions import ValidationError

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Env names Dockyard sets itself; a spec may not override them.
RESERVED_ENV = re.compile(r"^(PARAM_|DOCKYARD_)")
MAX_ARGS = 1000
MAX_ARG_CHARS = 100_000
MAX_SWEEP_JOBS = 256


def command_normalise(command) -> tuple[list[str], bool]:
    """A list of arguments, or one shell string (run by `sh -c`): ([...], shell)."""
    if isinstance(command, str):
        if not command.strip():
            raise ValidationError({"command": "Give a command to run."})
        if len(command) > MAX_ARG_CHARS:
            raise ValidationError({"command": f"The command is longer than {MAX_ARG_CHARS} characters."})
        return [command], True
    if not isinstance(command, list | tuple) or not command:
        raise ValidationError({"command": "Give the command as a list of arguments or as one shell string."})
    if len(command) > MAX_ARGS or not all(isinstance(a, str) for a in command):
        raise ValidationError({"command": f"Every argument must be a string (at most {MAX_ARGS} of them)."})
    if sum(map(len, command)) > MAX_ARG_CHARS:
        raise ValidationError({"command": f"The command is longer than {MAX_ARG_CHARS} characters."})
    return list(command), False


def parameters_clean(parameters) -> dict:
    """Parameters are names → strings, numbers or booleans (each becomes PARAM_<NAME>)."""
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise ValidationError({"parameters": "Give parameters as an object of names to values."})
    for name, value in parameters.items():
        if not NAME.match(str(name)):
            raise ValidationError({"parameters": f"{name!r} is not a valid parameter name (letters, digits, _)."})
        if not isinstance(value, str | int | float | bool) or (isinstance(value, float) and not math.isfinite(value)):
            raise ValidationError({"parameters": f"{name}: a parameter is a string, number or boolean."})
    upper = [str(n).upper() for n in parameters]
    if len(set(upper)) != len(upper):
        raise ValidationError({"parameters": "Two parameters differ only in case; their env vars would clash."})
    return dict(parameters)


def env_clean(env, *, field: str = "env") -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise ValidationError({field: "Give env as an object of names to string values."})
    for name, value in env.items():
        if not NAME.match(str(name)):
            raise ValidationError({field: f"{name!r} is not a valid variable name (letters, digits, _)."})
        if RESERVED_ENV.match(name):
            raise ValidationError({field: f"{name}: names starting PARAM_ or DOCKYARD_ are set by Dockyard."})
        if not isinstance(value, str):
            raise ValidationError({field: f"{name}: values are strings."})
    return dict(env)


def parameter_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parameter_env(parameters: Mapping) -> dict[str, str]:
    return {f"PARAM_{name.upper()}": parameter_text(value) for name, value in parameters.items()}


def argv(command: list[str], *, shell: bool, parameters: Mapping) -> list[str]:
    """The arguments the container runs: `{name}` replaced by the parameter's value (other
    braces, e.g. awk's, are left alone), and a shell string wrapped in `sh -c`."""

    def fill(text: str) -> str:
        return PLACEHOLDER.sub(
            lambda m: parameter_text(parameters[m.group(1)]) if m.group(1) in parameters else m.group(0), text
        )

    filled = [fill(arg) for arg in command]
    return ["sh", "-c", filled[0]] if shell else filled


# --- Sweeps -------------------------------------------------------------------------------------


def sweep_points(sweep) -> list[dict]:
    """The parameter sets of a sweep: every point of {"grid": {name: [values]}}, or N samples of
    {"random": {"samples": N, "seed": S, "ranges": {name: {"min", "max", "log"?, "int"?} | {"values": [...]}}}}."""
    if not isinstance(sweep, Mapping) or len(sweep) != 1 or next(iter(sweep)) not in ("grid", "random"):
        raise ValidationError({"sweep": 'Give either {"grid": {...}} or {"random": {...}}.'})
    kind, body = next(iter(sweep.items()))
    points = _grid(body) if kind == "grid" else _random(body)
    if not points:
        raise ValidationError({"sweep": "The sweep has no points."})
    if len(points) > MAX_SWEEP_JOBS:
        raise ValidationError({"sweep": f"The sweep makes {len(points)} jobs; at most {MAX_SWEEP_JOBS} are allowed."})
    for point in points:
        parameters_clean(point)
    return points


def _grid(body) -> list[dict]:
    if not isinstance(body, Mapping) or not body:
        raise ValidationError({"sweep": "A grid maps each parameter name to a list of values."})
    for name, values in body.items():
        if not isinstance(values, list) or not values:
            raise ValidationError({"sweep": f"grid {name}: give a non-empty list of values."})
    size = math.prod(len(v) for v in body.values())
    if size > MAX_SWEEP_JOBS:
        raise ValidationError({"sweep": f"The grid makes {size} jobs; at most {MAX_SWEEP_JOBS} are allowed."})
    names = list(body)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*body.values())]


def _random(body) -> list[dict]:
    if not isinstance(body, Mapping) or not isinstance(body.get("ranges"), Mapping) or not body["ranges"]:
        raise ValidationError({"sweep": 'random needs "ranges": {name: {"min": ..., "max": ...}} and "samples".'})
    samples = body.get("samples")
    if not isinstance(samples, int) or isinstance(samples, bool) or not 1 <= samples <= MAX_SWEEP_JOBS:
        raise ValidationError({"sweep": f"random samples: a whole number from 1 to {MAX_SWEEP_JOBS}."})
    seed = body.get("seed", 0)
    if not isinstance(seed, int):
        raise ValidationError({"sweep": "random seed: a whole number."})
    ranges = {name: _range(name, spec) for name, spec in body["ranges"].items()}
    rng = random.Random(seed)  # noqa: S311  (sampling, not security)
    return [{name: draw(rng) for name, draw in ranges.items()} for _ in range(samples)]


def _range(name: str, spec):
    if isinstance(spec, Mapping) and isinstance(spec.get("values"), list) and spec["values"]:
        values = spec["values"]
        return lambda rng: rng.choice(values)
    if not isinstance(spec, Mapping) or not all(isinstance(spec.get(k), int | float) for k in ("min", "max")):
        raise ValidationError({"sweep": f'random {name}: give {{"min": a, "max": b}} or {{"values": [...]}}.'})
    low, high, log, whole = spec["min"], spec["max"], bool(spec.get("log")), bool(spec.get("int"))
    if low > high or (log and low <= 0):
        raise ValidationError({"sweep": f"random {name}: min must be at most max (and above 0 for log)."})
    if whole:
        return lambda rng: rng.randint(int(low), int(high))
    if log:
        return lambda rng: float(f"{math.exp(rng.uniform(math.log(low), math.log(high))):.6g}")
    return lambda rng: float(f"{rng.uniform(low, high):.6g}")


def metric_goal(name: str, goals: Mapping) -> str:
    """ "min" or "max": what counts as best for a metric (losses and errors go down)."""
    if name in goals:
        return goals[name]
    lowered = name.lower()
    return (
        "min"
        if any(word in lowered for word in ("loss", "error", "err", "mse", "mae", "rmse", "perplexity"))
        else "max"
    )


# --- Metrics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsLimits:
    """How much of a metrics file is read: a metrics file is the job's to write, so every
    part of reading it is bounded (bytes, line length, series, points per series)."""

    max_bytes: int
    max_line: int
    max_series: int
    max_points: int


@dataclass
class MetricsRead:
    """Series by metric name, and what was left out (each a sentence for the owner)."""

    series: dict[str, list[list[float]]]
    notes: list[str] = field(default_factory=list)

    @property
    def last(self) -> dict[str, float]:
        return {name: points[-1][1] for name, points in self.series.items() if points}


class _Thinned:
    """A series kept to at most `cap` points (plus the latest): past the cap every other point
    goes and only every 2nd (4th, ...) new one is kept, so the curve's shape and its last value
    survive in bounded memory."""

    def __init__(self, cap: int):
        self.cap, self.stride, self.seen = max(cap, 2), 1, 0
        self.points: list[list[float]] = []
        self.latest: list[float] | None = None

    def add(self, point: list[float]) -> None:
        self.latest = point
        if self.seen % self.stride == 0:
            self.points.append(point)
            if len(self.points) > self.cap:
                self.points, self.stride = self.points[::2], self.stride * 2
        self.seen += 1

    def result(self) -> list[list[float]]:
        tail = [self.latest] if self.latest is not None and self.latest is not self.points[-1] else []
        return self.points + tail


def metrics_parse(stream: IO[bytes], *, limits: MetricsLimits, partial_first: bool = False) -> MetricsRead:
    """Series by metric name from metrics.jsonl, read line by line with bounded reads: each line
    a JSON object; "step" (or the line's index) is x, every other number a metric. Lines that
    are not JSON objects are skipped, and so are lines longer than `limits.max_line` (never held
    whole). `partial_first`: the stream starts mid-line (the file's head was skipped)."""
    series: dict[str, _Thinned] = {}
    long_lines = dropped = 0
    for index, line in enumerate(_lines(stream, max_line=limits.max_line)):
        if line is None:
            long_lines += 1
            continue
        if index == 0 and partial_first:
            continue
        row = _row(line)
        step = row.get("step", index) if row else index
        if not _number(step):
            step = index
        for name, value in (row or {}).items():
            if name == "step" or not _number(value) or len(name) > 100:
                continue
            if name not in series and len(series) >= limits.max_series:
                dropped += 1
                continue
            series.setdefault(name, _Thinned(limits.max_points)).add([step, value])
    notes = []
    if long_lines:
        notes.append(f"{long_lines} line(s) of metrics.jsonl longer than {limits.max_line // 1024} KiB were skipped.")
    if dropped:
        notes.append(f"metrics.jsonl names more than {limits.max_series} metrics; the others were not kept.")
    return MetricsRead({name: thinned.result() for name, thinned in series.items()}, notes)


def _lines(stream: IO[bytes], *, max_line: int) -> Iterator[bytes | None]:
    """Each line of the stream, or None for a line over `max_line` bytes (read past in pieces
    of that size, never held whole)."""
    while line := stream.readline(max_line + 1):
        if len(line) <= max_line or line.endswith(b"\n"):
            yield line
            continue
        while (rest := stream.readline(max_line + 1)) and not rest.endswith(b"\n"):
            pass
        yield None


def _row(line: bytes) -> dict | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
