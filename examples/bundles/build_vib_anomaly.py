#!/usr/bin/env python3
"""Build the example bundle's models: a vibration anomaly score from 256-sample windows.

The score is a logit: positive means anomalous. The model takes the magnitudes of the window's
real FFT (129 values, computed in the bundle's function with `rfft(w)`) into one fully connected
layer trained here, deterministically, by logistic regression on simulated windows: normal
machines vibrate at amplitude 0.5–1.5 with noise; worn bearings add bursts and a second, louder
tone. Three variants carry the same weights: float32 TFLite, int8 TFLite (full integer), and a
native numpy linear model for devices without TFLite.

    python examples/bundles/build_vib_anomaly.py      writes models/ and the accuracies into manifest.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BUNDLE = HERE / "vib-anomaly"
sys.path.insert(0, str(HERE.parent.parent))

WINDOW = 256
RATE_HZ = 100.0


def simulated_windows(n: int, anomalous: bool, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(WINDOW) / RATE_HZ
    out = np.empty((n, WINDOW))
    for i in range(n):
        amplitude = rng.uniform(0.5, 1.5)
        frequency = rng.uniform(2.0, 12.0)
        x = amplitude * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi))
        x += rng.normal(0, rng.uniform(0.05, 0.4), WINDOW)
        if anomalous:
            start = rng.integers(0, WINDOW - 32)
            length = rng.integers(32, WINDOW - start + 1)
            burst = rng.uniform(2.0, 5.0) * np.sin(2 * np.pi * rng.uniform(15, 45) * t[:length])
            x[start:start + length] += burst
        out[i] = x
    return out


def features(windows: np.ndarray) -> np.ndarray:
    return np.abs(np.fft.rfft(windows, axis=1))


def train(x: np.ndarray, y: np.ndarray, steps: int = 3000, rate: float = 0.5) -> tuple[np.ndarray, float]:
    """Logistic regression by gradient descent on standardized features, folded back to raw."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mean) / std
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(z @ w + b)))
        grad = p - y
        w -= rate * (z.T @ grad / len(y) + 1e-3 * w)
        b -= rate * grad.mean()
    return w / std, b - float((w / std) @ mean)


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(((logits > 0) == (y > 0.5)).mean())


def main() -> dict:
    from streamql.testing.tflite import fully_connected, int8_fully_connected
    rng = np.random.default_rng(2024)
    normal, worn = simulated_windows(1500, False, rng), simulated_windows(1500, True, rng)
    x = features(np.concatenate([normal, worn]))
    y = np.concatenate([np.zeros(len(normal)), np.ones(len(worn))])
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    split = int(0.8 * len(y))
    w, b = train(x[:split], y[:split])
    held_x, held_y = x[split:], y[split:]

    weights = w.reshape(1, -1).astype(np.float32)
    bias = np.array([b], dtype=np.float32)
    models = BUNDLE / "models"
    models.mkdir(exist_ok=True)
    (models / "vib_f32.tflite").write_bytes(fully_connected(weights, bias, input_name="spectrum",
                                                            output_name="score"))
    # int8 ranges from the data: normal spectra need fine steps; louder values saturate, which
    # still reads as anomalous
    logits = x[:split] @ w + b
    span = float(np.percentile(x[:split], 99.0))
    out_range = (float(np.percentile(logits, 1)), float(np.percentile(logits, 99)))
    int8 = int8_fully_connected(weights, bias, input_range=(0.0, span), output_range=out_range)
    (models / "vib_i8.tflite").write_bytes(int8.data if hasattr(int8, "data") else int8[0])
    (models / "fallback.json").write_text(json.dumps(
        {"type": "linear_regression", "weights": [w.round(12).tolist()], "bias": [round(b, 12)]}, indent=1) + "\n")

    float_acc = accuracy(held_x @ w + b, held_y)
    from streamql.models import load_model_file
    int8_model = load_model_file(models / "vib_i8.tflite")
    int8_acc = accuracy(np.asarray(int8_model.predict(held_x.astype(np.float32)))[:, 0], held_y)
    manifest_path = BUNDLE / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    variants = {v["id"]: v for v in manifest["models"][0]["variants"]}
    variants["float32"]["accuracy"] = round(float_acc, 4)
    variants["int8"]["accuracy"] = round(int8_acc, 4)
    variants["numpy"]["accuracy"] = round(float_acc, 4)
    manifest["provenance"]["metrics"] = {"held_out_accuracy_float32": round(float_acc, 4),
                                         "held_out_accuracy_int8": round(int8_acc, 4),
                                         "held_out_windows": int(len(held_y))}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return {"float32": float_acc, "int8": int8_acc}


if __name__ == "__main__":
    print(main())
