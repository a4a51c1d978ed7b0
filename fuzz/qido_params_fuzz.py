"""Coverage-guided fuzzing of the QIDO-RS query parameters, down to the SQL they make.

Targets dicomweb/qido.py, dicomweb/query.py and dicomweb/index/search.py. An input is
`studies?`, `series?` or `instances?` and a raw query string.

    .venv/bin/python fuzz/qido_params_fuzz.py -max_total_time=60 fuzz/corpus/qido
"""

from harness import fuzz

if __name__ == "__main__":
    fuzz("qido", ("dicomweb",))
