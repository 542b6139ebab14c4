"""Stand-in data: the first horsepower values of the Auto MPG data set."""
import numpy as np


def get_horsepower_features():
    return np.array([130.0, 165.0, 150.0, 150.0, 140.0])
