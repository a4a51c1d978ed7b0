"""Coverage-guided fuzzing of the DICOM header parse at ingest.

Targets dicomweb/parsing.py (extract), the fastheader reader, pydicom's reader and
dicomweb/pixels/frames.py. An input is the bytes of one STOW-RS part.

    .venv/bin/python fuzz/dicom_header_fuzz.py -max_total_time=60 fuzz/corpus/dicom
"""

from harness import fuzz

if __name__ == "__main__":
    fuzz("dicom", ("dicomweb", "pydicom"))
