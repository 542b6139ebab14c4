"""StreamQL: an object-functional query language over bags, vectors and endless streams."""
__version__ = "0.1.0"
