"""Package discovery. Two directories at the top of the repository ship inside the wheel: the
grammar (`grammar/`, the single source of truth for syntax) as `streamql.grammar`, and the
examples (`examples/`, with the demo's model bundle) as `streamql.examples`."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["streamql*", "edge_engine*", "federation*"])
    + ["streamql.grammar", "streamql.examples"],
    package_dir={"streamql.grammar": "grammar", "streamql.examples": "examples"},
)
