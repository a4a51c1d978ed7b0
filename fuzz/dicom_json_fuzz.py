"""Coverage-guided fuzzing of JSON request bodies and of the DICOM JSON model reader.

Targets dicomweb/jsonbody.py and dicomweb/dicomxml.py (json_to_xml). An input is one
JSON body.

    .venv/bin/python fuzz/dicom_json_fuzz.py -max_total_time=60 fuzz/corpus/dicomjson
"""

from harness import fuzz

if __name__ == "__main__":
    fuzz("dicomjson", ("dicomweb",))
