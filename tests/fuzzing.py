"""Shared settings of the fuzz suites: how many cases each property runs.

The default suite runs a small profile; `NPUCTL_FUZZ=full` runs the long one (10,000 cases per manifest
property, more HTTP cases per operation). See tests/README.md.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FULL = os.environ.get("NPUCTL_FUZZ", "").lower() == "full"
MANIFEST_CASES = 10_000 if FULL else 200
HTTP_CASES = 200 if FULL else 25


def fuzz_settings(cases: int) -> settings:
    # No deadline: a slow case on this shared 2-core machine is not a bug; hangs are caught by the
    # loader's own limits (tested directly) and by pytest's overall run. No example database: the
    # seed is printed on failure, and the tree stays clean.
    return settings(max_examples=cases, deadline=None, database=None, derandomize=not FULL,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
