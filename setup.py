"""Package discovery: the grammar lives at the top of the repository (`grammar/`) as the single
source of truth for syntax and ships inside the wheel as `streamql.grammar`."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["streamql*", "edge_engine*", "federation*"]) + ["streamql.grammar"],
    package_dir={"streamql.grammar": "grammar"},
)
