"""Batched physical operators over numpy arrays; expressions compiled to closures."""
