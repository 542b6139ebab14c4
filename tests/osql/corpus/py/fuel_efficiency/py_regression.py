"""Stand-in for the model's TensorFlow helpers: a 'model' is a dict of weights."""
import numpy as np


def get_model_summary(model, weights):
    return f"{len(model)} layers" + (f": {sorted(model)}" if weights else "")


def get_weights(model, layer_name):
    return np.asarray(model[layer_name], dtype=np.float32)
