"""The cluster tests need a running Slurm with accounting: `make test-cluster` brings one up
(tests/cluster/slurm.sh), runs them with MABENCH_TEST_CLUSTER=1, and tears it down. Anywhere
else they are skipped, with that reason in the summary."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("MABENCH_TEST_CLUSTER") == "1":
        return
    skip = pytest.mark.skip(reason="needs the test Slurm cluster: run `make test-cluster`")
    for item in items:
        if "tests/cluster/" in str(item.fspath):
            item.add_marker(skip)
