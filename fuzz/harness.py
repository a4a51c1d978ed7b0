"""The common part of the coverage-guided harnesses: instrument, then fuzz one target.

Each harness feeds libFuzzer's inputs to a check of tests/fuzz/targets.py, the same
check the property tests and the regression replay run. An exception that escapes the
check is a crash: libFuzzer stops and writes the input to a crash-* file (see README).
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent


def fuzz(target: str, instrumented: tuple[str, ...] = ("dicomweb",)) -> None:
    """Fuzz the byte-level check of `target` with libFuzzer's command-line arguments.

    `instrumented` are the packages whose coverage guides the fuzzer: instrumenting
    more finds paths in them, at some cost in executions per second.
    """
    sys.path.insert(0, str(ROOT))
    # Odd input makes pydicom warn and log on almost every execution.
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    with atheris.instrument_imports(include=list(instrumented)):
        from tests.fuzz.targets import BYTE_CHECKS

        check = BYTE_CHECKS[target]

    def one_input(data: bytes) -> None:
        check(data)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
