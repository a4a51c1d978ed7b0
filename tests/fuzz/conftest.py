"""Hypothesis profiles for the fuzz tests, a time guard, and the app served in process.

Profiles (HYPOTHESIS_PROFILE): "ci", the default, is derandomized and keeps no example
database, so every run tries the same inputs and the directory runs in well under a
minute; "long" is for local runs that look for new bugs (random, many more examples,
an example database under .hypothesis/).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import timedelta
from types import FrameType

import pytest
from hypothesis import HealthCheck, settings

from tests.fuzz.served import Served, serve

_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "ci",
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=timedelta(seconds=5),
    print_blob=True,
    suppress_health_check=_CHECKS,
)
settings.register_profile(
    "long",
    max_examples=20_000,
    deadline=timedelta(seconds=5),
    print_blob=True,
    suppress_health_check=_CHECKS,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# A fuzz test that runs longer than this has met an input that hangs.
_TEST_TIME_LIMIT = 3_600 if settings.default.max_examples > 1_000 else 120


@pytest.fixture(autouse=True)
def _time_guard() -> Iterator[None]:
    """Fail a test that hangs instead of blocking the run (where there is SIGALRM)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expired(_signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError(f"the test ran longer than {_TEST_TIME_LIMIT} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(_TEST_TIME_LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The app with one stored study, shared by a test module's end-to-end tests."""
    with serve(tmp_path_factory.mktemp("served")) as app:
        yield app
