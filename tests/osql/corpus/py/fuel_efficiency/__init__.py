"""A stand-in for the fuel_efficiency model's Python side (the original trains TensorFlow models on
the Auto MPG data set); the first rows of its horsepower column, enough for the corpus."""
