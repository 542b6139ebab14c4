"""`streamql model init DIR`: a bundle directory that packs, installs and passes its tests as is.

The template model is a tiny fully connected layer (4 inputs → 2 outputs) with exact weights, in
two variants: a float32 `.tflite` file (generated in code, no TensorFlow needed) and the same
network as a native numpy spec for devices without a TFLite runtime.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from streamql.errors import ModelError
from streamql.testing.tflite import fully_connected

__all__ = ["TEMPLATE_BIAS", "TEMPLATE_WEIGHTS", "init_bundle"]

# weights [outputs, inputs]: predict([1, 2, 3, 4]) is exactly [10, -0.5]
TEMPLATE_WEIGHTS = [[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 0.0, 0.0]]
TEMPLATE_BIAS = [0.0, 0.5]


def _names(directory: str, name: str | None) -> tuple[str, str]:
    bundle = name or os.path.basename(os.path.abspath(directory)) or "my-bundle"
    bundle = re.sub(r"[^A-Za-z0-9._-]+", "-", bundle).strip("-.") or "my-bundle"
    model = re.sub(r"[^A-Za-z0-9_]+", "_", bundle).strip("_") or "model"
    if model[0].isdigit():
        model = "m_" + model
    return bundle, model


def init_bundle(directory: str | os.PathLike, name: str | None = None) -> list[str]:
    """Create a working bundle template in `directory` (new or empty); returns the files written."""
    directory = os.fspath(directory)
    root = Path(directory)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ModelError(f"'{directory}' already exists and is not an empty directory")
    bundle, model = _names(directory, name)
    tflite = fully_connected(TEMPLATE_WEIGHTS, TEMPLATE_BIAS)
    native = {"type": "dense", "layers": [{
        "weights": [list(col) for col in zip(*TEMPLATE_WEIGHTS)],  # (inputs, units) as Keras stores it
        "bias": TEMPLATE_BIAS, "activation": "linear"}]}
    manifest = {
        "format_version": 1,
        "name": bundle,
        "version": "0.1.0",
        "description": f"Template bundle for the model '{model}': edit the manifest, replace the artifacts.",
        "requirements": {"signals": ["sensor"]},
        "models": [{
            "name": model,
            "variants": [
                {"id": "float32", "kind": "tflite", "artifact": f"models/{model}.tflite",
                 "accuracy": 1.0, "requirements": {"runtimes": {"tflite": ">=2.3"}}},
                {"id": "numpy", "kind": "native", "artifact": f"models/{model}.json",
                 "accuracy": 0.99, "requirements": {}},
            ],
        }],
        "scripts": ["functions.sql"],
        "autostart": [f"autostart/{model}_scores.sql"],
        "tests": ["tests/smoke.sql"],
        "provenance": {
            "training_code": "streamql model init (generated weights)",
            "dataset": "none",
            "metrics": {"accuracy": 1.0},
            "converter": "streamql.testing.tflite",
        },
    }
    files = {
        "manifest.json": json.dumps(manifest, indent=2) + "\n",
        f"models/{model}.tflite": tflite,
        f"models/{model}.json": json.dumps(native, indent=2) + "\n",
        "functions.sql": (
            f"// Functions of the bundle '{bundle}', run when it is installed.\n"
            f"create function {model}_score(Vector of Real w) -> Vector of Real\n"
            f"  as predict('{model}', w);\n"
        ),
        f"autostart/{model}_scores.sql": (
            "// Autostart queries: every statement of the files listed under \"autostart\" in the\n"
            "// manifest is started as a background query when the bundle is installed.\n"
            f"select stream of predict('{model}', w) from Vector of Real w\n"
            "  where w in winagg(signal_stream('sensor'), 4, 4);\n"
        ),
        "tests/smoke.sql": (
            f"validate '{model} predicts' check predict('{model}', [1, 2, 3, 4]) => [10.0, -0.5]\n"
            f"  check {model}_score([0, 0, 0, 0]) => [0.0, 0.5];\n"
        ),
        "README.md": (
            f"# {bundle}\n\n"
            "A StreamQL model bundle. `streamql model pack .` packs it, `streamql model test BUNDLE`\n"
            "runs the `validate` statements under `tests/` in a fresh engine.\n"
        ),
    }
    written = []
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        written.append(str(path))
    return written
