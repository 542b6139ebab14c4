"""Models in queries: `predict`, `models()`, `model_info`, and the native model constructors.

`predict(name, x)` looks the model up once per batch, so a hot swap takes effect at the next
batch and no batch mixes versions; a batch of windows is one batched invoke.
"""
from __future__ import annotations

import numpy as np

from ..bound import TConst
from ..errors import ModelError, QueryError, QueryRuntimeError
from ..models import (dense_network, kmeans, linear_regression, logistic_regression, model_info,
                      zscore_detector)
from ..registry import Library
from ..types import RECORD, REAL, vector_of
from ..values import Bag


def _entry(ctx, name: str):
    if not isinstance(name, str):
        raise QueryRuntimeError(f"a model is named by a string, not {name!r}")
    try:
        return ctx.models.get(name)
    except QueryError as exc:
        raise QueryRuntimeError(exc.message) from None


def _output(result):
    if isinstance(result, dict):
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in result.items()}
    if isinstance(result, np.generic):
        return result.item()
    return result


def predict(ctx, name: str, x):
    model = _entry(ctx, name).model
    try:
        return _output(model.predict(x if isinstance(x, np.ndarray) else np.asarray(x, dtype=np.float64)))
    except ModelError as exc:
        raise QueryRuntimeError(f"predict({name!r}): {exc.message}") from None


def predict_batch(ctx, n: int, name, x):
    """One batched invoke for a whole column of inputs (a batch of windows)."""
    if not isinstance(name, str):
        names = set(np.asarray(name).tolist()) if isinstance(name, np.ndarray) else set(name)
        if len(names) != 1:
            return [predict(ctx, nm, xi) for nm, xi in zip(name, x)]
        name = names.pop()
    model = _entry(ctx, name).model
    try:
        result = model.predict(np.asarray(x, dtype=np.float64) if x.dtype.kind not in "f" else x)
    except ModelError as exc:
        raise QueryRuntimeError(f"predict({name!r}): {exc.message}") from None
    if isinstance(result, dict):
        keys = list(result)
        return [{k: _output(result[k][i]) for k in keys} for i in range(n)]
    return result


def _predict_type(catalog, args):
    name = args[0]
    if isinstance(name, TConst) and isinstance(name.value, str):
        entry = catalog.model(name.value)
        if entry is not None:
            outputs = getattr(entry.model, "output_names", None) or ()
            return RECORD if len(outputs) > 1 else vector_of(REAL)
    return None


def _predict_batch_type(catalog, args):
    single = _predict_type(catalog, args)
    return vector_of(single) if single is not None and single.is_vector else single


def _models(ctx) -> Bag:
    return Bag([model_info(entry) for entry in ctx.models.entries()])


def _model_info(ctx, name: str) -> dict:
    return model_info(_entry(ctx, name))


def _model_version(ctx, name: str):
    entry = ctx.models.find(name)
    return None if entry is None else entry.version


def _native(constructor, *extra):
    def build(*args):
        try:
            return constructor(*[_plain(a) for a in args])
        except QueryError as exc:
            raise QueryRuntimeError(exc.message) from None
        except (ValueError, TypeError) as exc:
            raise QueryRuntimeError(str(exc)) from None
    return build


def _plain(value):
    if isinstance(value, Bag):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def register(lib: Library) -> None:
    d = lambda sig, **kw: lib.define(sig, topic="model", **kw)  # noqa: E731
    d("predict(Charstring model, Vector of Number x) -> Object", scalar=predict, batch=predict_batch,
      needs_context=True, volatile=True, batch_scalars=True, catalog_type=_predict_type,
      doc="Run a model on one input (or a vector of inputs): a vector, or a record for several outputs")
    d("predict(Charstring model, Vector of Vector of Number x) -> Object", scalar=predict, needs_context=True,
      volatile=True, catalog_type=_predict_batch_type,
      doc="Run a model on a batch written as a vector of inputs (or on one multi-dimensional input): "
          "outputs stacked, a vector of vectors (a record of stacked outputs for several outputs)")
    d("predict(Charstring model, Record x) -> Object", scalar=predict, needs_context=True, volatile=True,
      catalog_type=_predict_type, doc="Run a model with several named inputs")
    d("models() -> Bag of Record", scalar=_models, needs_context=True, volatile=True,
      doc="Every model in the store with its model_info")
    d("model_info(Charstring model) -> Record", scalar=_model_info, needs_context=True, volatile=True,
      doc="A model's version, sha256, size, working memory, MACs, inputs, outputs, quantization")
    d("model_version(Charstring model) -> Charstring", scalar=_model_version, needs_context=True, volatile=True,
      doc="The version of a model in this engine's store (null when it has none)")
    d("kmeans(Vector of Vector of Number centroids) -> Model", scalar=_native(kmeans),
      doc="A nearest-centroid model: predict gives {cluster (from 1), distance}")
    d("linear_regression(Vector of Number weights, Number bias) -> Model", scalar=_native(linear_regression),
      doc="A linear model: predict gives weights · x + bias")
    d("linear_regression(Vector of Vector of Number weights, Vector of Number bias) -> Model",
      scalar=_native(linear_regression), doc="A linear model with several outputs")
    d("logistic_regression(Vector of Number weights, Number bias) -> Model", scalar=_native(logistic_regression),
      doc="A logistic model: predict gives the probability sigmoid(weights · x + bias)")
    d("dense_network(Vector layers) -> Model", scalar=_native(dense_network),
      doc="A small dense network from layers {\"weights\", \"bias\", \"activation\"}")
    d("zscore_detector(Number mean, Number std, Number threshold) -> Model", scalar=_native(zscore_detector),
      doc="An anomaly detector: predict gives {zscore, anomaly} against a reference mean and std")
    d("zscore_detector(Number threshold) -> Model", scalar=_native(lambda t: zscore_detector(None, None, t)),
      doc="An anomaly detector learning the mean and std online from what it sees")
