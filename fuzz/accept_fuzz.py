"""Coverage-guided fuzzing of Accept header negotiation (dicomweb/negotiation.py).

An input is one Accept header value.

    .venv/bin/python fuzz/accept_fuzz.py -max_total_time=60 fuzz/corpus/accept
"""

from harness import fuzz

if __name__ == "__main__":
    fuzz("accept", ("dicomweb",))
