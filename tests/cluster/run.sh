#!/usr/bin/env bash
# `make test-cluster`: bring up the single-node Slurm of tests/cluster/slurm.sh, run the smoke
# study through --workflow-profile profiles/slurm (tests/cluster/test_slurm_study.py), and
# tear the cluster down again, whatever happened. Without root or apt it prints a SKIPPED line
# saying why and exits 0; that is the only way it exits 0 without running the tests.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! why=$(tests/cluster/slurm.sh check); then
    echo "SKIPPED: make test-cluster did not run: this machine $why"
    exit 0
fi
trap 'tests/cluster/slurm.sh down' EXIT
tests/cluster/slurm.sh up
# Its own base temp folder: pytest prunes old numbered folders under /tmp/pytest-of-<user>,
# and other test runs on the machine must not prune this one's working directory under it.
base=$(mktemp -d /var/tmp/mabench-test-cluster.XXXXXX)
if MABENCH_TEST_CLUSTER=1 .venv/bin/python -m pytest tests/cluster -v -s -p no:cacheprovider \
    --basetemp="$base" "$@"; then
    rm -rf "$base"
else
    echo "test-cluster: failed; its working directories are kept under $base"
    exit 1
fi
