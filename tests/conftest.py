"""pytest fixtures: one throwaway cluster per test session, one fresh database per module."""

import itertools
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from pgcluster import Cluster  # noqa: E402

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def cluster():
    c = Cluster().init().start()
    try:
        yield c
    finally:
        if os.environ.get("VECGUARD_KEEP_CLUSTER"):
            print(f"\ncluster kept: {c.psql_hint()}")
        else:
            c.destroy()


@pytest.fixture(scope="module")
def dbname(cluster):
    """A new database with vecguard installed, dropped after the module."""
    name = f"t{next(_db_counter)}_{os.getpid()}"
    cluster.sql(f"CREATE DATABASE {name}")
    cluster.sql("CREATE EXTENSION vecguard", dbname=name)
    yield name
    cluster.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def conn(cluster, dbname):
    with cluster.connect(dbname) as c:
        yield c
