"""Models in the main-memory store: TFLite through LiteRT, native numpy models, a versioned
registry with hot swap and rollback, signed bundles and deployability.

The engine's narrow interface:

    from streamql import models
    model = models.load_model_file("vib.tflite", name="vib")   # create model … from 'file'
    model = models.kmeans([[0.1, 0.2], [0.9, 0.8]])              # create model … as kmeans(…)
    entry = registry.install("vib", model, version="1.2.0")      # registry = models.ModelRegistry()
    registry.get("vib").model.predict(window_or_batch)           # predict(name, x), once per batch
    models.model_info(registry.get("vib"))                       # model_info(name)
    meta, payloads = registry.dump()                             # snapshots
"""
from .base import Model
from .bundle import Bundle, inspect, pack, pack_bytes, read_bundle, sign, split_statements, verify
from .bundle_template import init_bundle
from .deploy import (FIT_CAPABILITIES, BundleFit, Choice, Verdict, bundle_fit, choose_variant, deployable,
                     local_capabilities, requirements_from_info)
from .install import InstallReport, TestReport, TestResult, install_bundle, run_bundle_tests
from .loader import load_model, load_model_file, restore
from .native import (dense_network, from_spec, kmeans, linear_regression, logistic_regression,
                     zscore_detector)
from .registry import ModelEntry, ModelRegistry, model_info
from .signing import keygen
from .tflite import TFLiteModel, load_tflite

__all__ = [
    "FIT_CAPABILITIES", "Bundle", "BundleFit", "Choice", "InstallReport", "Model", "ModelEntry", "ModelRegistry",
    "TFLiteModel", "TestReport", "TestResult", "Verdict", "bundle_fit", "choose_variant",
    "dense_network", "deployable", "from_spec", "init_bundle", "inspect", "install_bundle",
    "keygen", "kmeans", "linear_regression", "load_model", "load_model_file", "load_tflite",
    "local_capabilities", "logistic_regression", "model_info", "pack", "pack_bytes", "read_bundle",
    "requirements_from_info", "restore", "run_bundle_tests", "sign", "split_statements", "verify",
    "zscore_detector",
]
