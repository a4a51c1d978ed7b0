"""Coverage-guided fuzzing of the multipart/related reader behind STOW-RS.

Targets dicomweb/multipart.py and the Content-Type handling of dicomweb/stow.py. An
input is request headers, an empty line and a body (targets.multipart_from_bytes).

    .venv/bin/python fuzz/multipart_fuzz.py -max_total_time=60 fuzz/corpus/multipart
"""

from harness import fuzz

if __name__ == "__main__":
    fuzz("multipart", ("dicomweb", "multipart"))
