"""Package list: setup.py only because pyproject.toml cannot add a remapped package to find().

migrations/ lives at the top of the repo, where a maintainer looks for it, but ships inside the wheel as
``ledger.migrations``, so installing never creates a top-level ``migrations`` package.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(
        include=["ledger", "ledger.*", "collector", "collector.*", "quota_ledger_demo"]
    )
    + ["ledger.migrations", "ledger.migrations.versions"],
    package_dir={"ledger.migrations": "migrations"},
)
