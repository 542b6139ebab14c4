"""Testing helpers that ship with the library (model builders, fakes)."""
