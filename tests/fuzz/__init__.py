"""Fuzzing inside the suite: generated REST calls, signed webhook and Slack bodies, MIME.

Each run is bounded so the suite stays fast; ``FUZZ_EXAMPLES`` raises every
test's example count for a longer (nightly) run::

    FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/fuzz -q
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

NIGHTLY = os.environ.get("FUZZ_EXAMPLES")


def examples(default: int) -> settings:
    """Hypothesis settings: ``default`` examples, or ``FUZZ_EXAMPLES`` when set.

    Function-scoped fixtures (the Harness) are shared by every example on purpose:
    each example compares Redis before and after its own request.
    """
    return settings(
        max_examples=int(NIGHTLY) if NIGHTLY else default,
        deadline=None,
        database=None,
        derandomize=NIGHTLY is None,  # the suite's runs are reproducible; nightly ones explore
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
