"""Simulated signals as pure functions of (parameters, seed, time).

`SimModel.values_at(times)` is what a `SimulatedDriver` (edge_engine.signals) pushes at those
times, so tests and the federation's oracle compute exactly what an edge produced. Randomness is
counter-based (splitmix64 of the seed and the timestamp's bits), never a sequential generator,
so any subset of times, in any order, gives the same values.
"""
from __future__ import annotations

import builtins
import math
from typing import Any

import numpy as np

__all__ = ["SimModel", "SignalSpecError", "SHAPES"]

SHAPES = ("sine", "walk", "constant", "noise")


class SignalSpecError(ValueError):
    """A signal's configuration is wrong; `key` names the parameter."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


# == counter-based randomness: a pure function of (seed, salt, key) ===========================
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = 0x9E3779B97F4A7C15


_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, vectorized (uint64 arithmetic wraps; arrays never warn about it,
    so no errstate here: entering one costs more than the mixing of a few values)."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def _uniform(seed: int, salt: int, keys: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) for each uint64 key, independent across (seed, salt)."""
    base = np.uint64((seed * _GOLDEN + salt * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF)
    return (_mix(_mix(keys ^ base)) >> _S11).astype(np.float64) * (1.0 / (1 << 53))


def _gauss(seed: int, salt: int, keys: np.ndarray) -> np.ndarray:
    u1 = _uniform(seed, salt, keys)
    u2 = _uniform(seed, salt + 7919, keys)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def _row_bases(seed: int, salts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The per-row bases `_gauss_rows` mixes with (constant for a model: computed once)."""
    def bases(offset: int) -> np.ndarray:
        return np.array([(seed * _GOLDEN + (salt + offset) * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF
                         for salt in salts], dtype=np.uint64)[:, None]
    return bases(0), bases(7919)


def _gauss_rows(seed: int, salts: list[int], keys: np.ndarray,
                bases: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """`_gauss(seed, salts[i], keys[i])` for every row i, in one pass."""
    first, second = bases if bases is not None else _row_bases(seed, salts)
    scale = 1.0 / (1 << 53)
    u1 = (_mix(_mix(keys ^ first)) >> _S11).astype(np.float64) * scale
    u2 = (_mix(_mix(keys ^ second)) >> _S11).astype(np.float64) * scale
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def _time_keys(times: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(times, dtype=np.float64).view(np.uint64)


def _cell_keys(cells: np.ndarray) -> np.ndarray:
    return cells.astype(np.int64).view(np.uint64)


# == simulated signals =========================================================================
_SIM_PARAMS = {
    "shape", "seed", "rate_hz", "offset", "amplitude", "frequency_hz", "phase", "noise",
    "reversion_s", "min", "max", "bursts", "spikes", "level_shifts",
}
_BURST_PARAMS = {"every_s", "probability", "duration_s", "amplitude", "frequency_hz"}
_SPIKE_PARAMS = {"rate_per_s", "amplitude"}
_SHIFT_PARAMS = {"every_s", "probability", "duration_s", "magnitude"}


class SimModel:
    """A simulated signal as a pure function of time (see the module docstring).

    shape `sine`: offset + amplitude·sin(2π·frequency_hz·t + phase);
    `walk`: a bounded, mean-reverting random walk around `offset` with standard deviation about
    `amplitude`, reverting over `reversion_s` (fractal value noise: octaves of smoothly
    interpolated random levels with amplitudes ∝ √scale, as a random walk's increments);
    `constant`: offset; `noise`: offset plus noise. On top: Gaussian `noise` (its standard
    deviation), `bursts` (an oscillation of `amplitude` at `frequency_hz` lasting `duration_s`,
    in a window of `every_s` with `probability`), `spikes` (±`amplitude` on single samples,
    `rate_per_s` on average), `level_shifts` (±`magnitude` for `duration_s`, in a window of
    `every_s` with `probability`); finally clipped to [`min`, `max`] when given.

    >>> model = SimModel(shape="sine", amplitude=2.0, frequency_hz=0.25, seed=1)
    >>> np.round(model.values_at([0.0, 1.0, 2.0]), 6).tolist()
    [0.0, 2.0, 0.0]
    """

    def __init__(self, shape: str = "sine", *, seed: int = 0, rate_hz: float = 1.0, offset: float = 0.0,
                 amplitude: float = 1.0, frequency_hz: float = 1.0, phase: float = 0.0, noise: float = 0.0,
                 reversion_s: float = 60.0, min: float | None = None, max: float | None = None,
                 bursts: dict | None = None, spikes: dict | None = None, level_shifts: dict | None = None):
        if shape not in SHAPES:
            raise SignalSpecError("shape", f"must be one of {', '.join(SHAPES)}, not {shape!r}")
        _check_int("seed", seed)
        for key, value in (("rate_hz", rate_hz), ("reversion_s", reversion_s)):
            _check_number(key, value, positive=True)
        for key, value in (("offset", offset), ("amplitude", amplitude), ("frequency_hz", frequency_hz),
                           ("phase", phase)):
            _check_number(key, value)
        _check_number("noise", noise, minimum=0.0)
        for key, value in (("min", min), ("max", max)):
            if value is not None:
                _check_number(key, value)
        if min is not None and max is not None and min > max:
            raise SignalSpecError("min", f"{min} is above max {max}")
        self.shape, self.seed, self.rate_hz = shape, int(seed), float(rate_hz)
        self.offset, self.amplitude, self.frequency_hz = float(offset), float(amplitude), float(frequency_hz)
        self.phase, self.noise, self.reversion_s = float(phase), float(noise), float(reversion_s)
        self.min, self.max = min, max
        self.bursts = _sub_params("bursts", bursts, _BURST_PARAMS,
                                  {"every_s": 60.0, "probability": 0.5, "duration_s": 5.0,
                                   "amplitude": 1.0, "frequency_hz": 50.0})
        self.spikes = _sub_params("spikes", spikes, _SPIKE_PARAMS, {"rate_per_s": 0.01, "amplitude": 5.0})
        self.level_shifts = _sub_params("level_shifts", level_shifts, _SHIFT_PARAMS,
                                        {"every_s": 600.0, "probability": 0.2, "duration_s": 120.0,
                                         "magnitude": 2.0})
        for name, params in (("bursts", self.bursts), ("level_shifts", self.level_shifts)):
            if params and params["duration_s"] > params["every_s"]:
                raise SignalSpecError(f"{name}.duration_s", "must not exceed every_s")
            if params and not 0 <= params["probability"] <= 1:
                raise SignalSpecError(f"{name}.probability", "must be between 0 and 1")
        # octaves of the walk: from reversion_s down to about one sample period
        self._octaves = int(np.clip(math.ceil(math.log2(builtins.max(2.0, self.reversion_s * self.rate_hz))), 1, 12))
        # the walk's constants, computed once (a driver asks for a few readings many times a second)
        octaves = range(self._octaves)
        self._walk_scales = self.reversion_s / np.array([float(1 << o) for o in octaves])
        self._walk_salts = [100 + o for o in octaves]
        self._walk_bases = _row_bases(self.seed, self._walk_salts)
        self._walk_weights = [math.sqrt((self.reversion_s / (1 << o)) / self.reversion_s) for o in octaves]
        self._walk_norm = math.sqrt(sum_in_order(w * w for w in self._walk_weights))
        # value_at's: each octave's two cells' bases for u1, then the same for u2
        self._walk_scales_py = self._walk_scales.tolist()
        self._walk_point_bases = np.concatenate([np.repeat(self._walk_bases[0][:, 0], 2),
                                                 np.repeat(self._walk_bases[1][:, 0], 2)])

    @classmethod
    def from_spec(cls, spec: dict) -> "SimModel":
        unknown = set(spec) - _SIM_PARAMS - {"name", "kind", "type", "batch_interval_s"}
        if unknown:
            raise SignalSpecError(sorted(unknown)[0], "unknown parameter of a simulated signal "
                                  f"(known: {', '.join(sorted(_SIM_PARAMS))})")
        return cls(**{k: v for k, v in spec.items() if k in _SIM_PARAMS})

    def values_at(self, times) -> np.ndarray:
        """The signal's value at each time (seconds since the epoch), float64."""
        t = np.ascontiguousarray(times, dtype=np.float64)
        keys = _time_keys(t)
        if self.shape == "sine":
            values = self.offset + self.amplitude * np.sin(2.0 * np.pi * self.frequency_hz * t + self.phase)
        elif self.shape == "walk":
            values = self.offset + self.amplitude * self._walk(t)
        else:
            values = np.full(t.shape, self.offset)
        if self.noise:
            values = values + self.noise * _gauss(self.seed, 1, keys)
        if self.bursts:
            values = values + self._bursts(t, keys)
        if self.spikes:
            values = values + self._spikes(keys)
        if self.level_shifts:
            values = values + self._level_shifts(t)
        if self.min is not None or self.max is not None:
            values = np.clip(values, self.min, self.max)
        return values

    def grid(self, n: int, start_time: float) -> np.ndarray:
        """The first `n` grid times `k / rate_hz` from the one at or just before `start_time`: what
        a driver started then samples."""
        first = math.floor(start_time * self.rate_hz)
        return np.arange(first, first + n, dtype=np.float64) / self.rate_hz

    def generate(self, n: int, start_time: float, period: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`n` readings: (times, values). Without `period`, on the driver's grid from `start_time`
        (exactly what a `SimulatedDriver` pushes); with it, at `start_time + i * period`."""
        times = self.grid(n, start_time) if period is None else start_time + np.arange(n) * period
        return times, self.values_at(times)

    def latest_at(self, now: float) -> tuple[float, float]:
        """(time, value) of the last grid reading at or before `now`: what `signal_value` reads
        once the driver has caught up (a fast driver delivers every `batch_interval_s`)."""
        t = math.floor(now * self.rate_hz) / self.rate_hz
        return t, self.value_at(t)

    def value_at(self, t: float) -> float:
        """`values_at([t])[0]`, bit for bit: one reading (a health sample's battery, a
        `signal_value`). A plain walk — no noise, bursts, spikes or level shifts — is computed with
        Python floats and a dozen numpy calls on one small array instead of ~100 calls: the
        battery of every heartbeat of 10,000 simulated edges took most of their processes' CPU.
        Python's + − × ÷ and floor round as numpy's do; the mixing, log1p, cos and sqrt run in
        numpy on the same values as `_walk`'s (tests/edge/test_edge_simulation.py checks)."""
        if self.shape != "walk" or self.noise or self.bursts or self.spikes or self.level_shifts:
            return float(self.values_at(np.array([t]))[0])
        t = float(t)
        keys, smooths = [], []
        for scale in self._walk_scales_py:
            position = t / scale
            cell = math.floor(position)
            frac = position - cell
            smooths.append(frac * frac * (3.0 - 2.0 * frac))
            keys += (cell, cell + 1)
        both = np.array(keys + keys, dtype=np.int64).view(np.uint64) ^ self._walk_point_bases
        uniform = (_mix(_mix(both)) >> _S11).astype(np.float64) * (1.0 / (1 << 53))
        half = len(keys)
        levels = (np.sqrt(-2.0 * np.log1p(-uniform[:half])) * np.cos(2.0 * np.pi * uniform[half:])).tolist()
        total = 0.0
        for octave, weight in enumerate(self._walk_weights):   # in _walk's order
            here, there = levels[2 * octave], levels[2 * octave + 1]
            total += weight * (here + (there - here) * smooths[octave])
        value = self.offset + self.amplitude * (total / self._walk_norm)
        if self.min is not None:
            value = max(value, self.min)
        if self.max is not None:
            value = min(value, self.max)
        return float(value)

    def _walk(self, t: np.ndarray) -> np.ndarray:
        # every octave's random levels in one pass over an (octaves, 2n) array: the same values
        # as octave by octave, at a fraction of the per-call overhead for the few readings a
        # driver asks for at a time
        flat = t.reshape(-1)
        n = flat.shape[0]
        position = flat[None, :] / self._walk_scales[:, None]
        cell = np.floor(position)
        frac = position - cell
        smooth = frac * frac * (3.0 - 2.0 * frac)
        levels = _gauss_rows(self.seed, self._walk_salts, _cell_keys(np.concatenate([cell, cell + 1], 1)),
                             self._walk_bases)
        total = np.zeros(n)
        for octave, weight in enumerate(self._walk_weights):   # in order: the same bits for any n
            here, there = levels[octave, :n], levels[octave, n:]
            total += weight * (here + (there - here) * smooth[octave])
        return (total / self._walk_norm).reshape(t.shape)

    def _window_events(self, t: np.ndarray, params: dict, salt: int):
        every, duration = params["every_s"], params["duration_s"]
        window = np.floor(t / every)
        keys = _cell_keys(window)
        happens = _uniform(self.seed, salt, keys) < params["probability"]
        start = window * every + _uniform(self.seed, salt + 1, keys) * (every - duration)
        active = happens & (t >= start) & (t < start + duration)
        return active, start, keys

    def _bursts(self, t: np.ndarray, keys: np.ndarray) -> np.ndarray:
        params = self.bursts
        active, start, _ = self._window_events(t, params, 200)
        phase = 2.0 * np.pi * params["frequency_hz"] * (t - start)
        envelope = np.sin(np.pi * np.clip((t - start) / params["duration_s"], 0.0, 1.0))
        jitter = 1.0 + 0.2 * _gauss(self.seed, 210, keys)
        return np.where(active, params["amplitude"] * envelope * np.sin(phase) * jitter, 0.0)

    def _spikes(self, keys: np.ndarray) -> np.ndarray:
        params = self.spikes
        chance = min(1.0, params["rate_per_s"] / self.rate_hz)
        hit = _uniform(self.seed, 300, keys) < chance
        size = params["amplitude"] * (0.5 + _uniform(self.seed, 301, keys))
        sign = np.where(_uniform(self.seed, 302, keys) < 0.5, -1.0, 1.0)
        return np.where(hit, sign * size, 0.0)

    def _level_shifts(self, t: np.ndarray) -> np.ndarray:
        params = self.level_shifts
        active, _, keys = self._window_events(t, params, 400)
        size = params["magnitude"] * (0.5 + _uniform(self.seed, 402, keys))
        sign = np.where(_uniform(self.seed, 403, keys) < 0.5, -1.0, 1.0)
        return np.where(active, sign * size, 0.0)


def sum_in_order(values) -> float:
    total = 0.0
    for value in values:
        total += value
    return total


def _sub_params(name: str, params: dict | None, known: set, defaults: dict) -> dict | None:
    if params is None or params is False:
        return None
    if params is True:
        params = {}
    if not isinstance(params, dict):
        raise SignalSpecError(name, "must be a table of parameters")
    unknown = set(params) - known
    if unknown:
        raise SignalSpecError(f"{name}.{sorted(unknown)[0]}", f"unknown parameter (known: {', '.join(sorted(known))})")
    merged = {**defaults, **params}
    for key, value in merged.items():
        _check_number(f"{name}.{key}", value, minimum=0.0)
    for key in ("every_s", "duration_s", "rate_per_s"):
        if key in merged and merged[key] <= 0:
            raise SignalSpecError(f"{name}.{key}", "must be positive")
    return {k: float(v) for k, v in merged.items()}


def _check_number(key: str, value: Any, positive: bool = False, minimum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SignalSpecError(key, f"must be a number, got {value!r}")
    if positive and value <= 0:
        raise SignalSpecError(key, f"must be positive, got {value!r}")
    if minimum is not None and value < minimum:
        raise SignalSpecError(key, f"must be at least {minimum:g}, got {value!r}")


def _check_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SignalSpecError(key, f"must be an integer, got {value!r}")
