"""Reading the header of a PS3.10 file straight from its bytes, without pydicom.

At ingest, `dicomweb.parsing` reads each stored file's header with pydicom, decodes
every value and builds the DICOM JSON model; that is most of ingest's CPU time. For the
common encodings this package does the same work directly on the bytes, and produces
exactly what the pydicom path produces:

* `FastHeader.model` equals the model `dicomweb.dicomjson.instance_json` builds from
  ``dcmread(stop_before_pixels=True)`` once every value has been decoded (as
  ``parsing._read_header`` does), without the pixel data entry;
* `FastHeader.bulk_locations` equals its bulk locations, pixel data excluded;
* `FastHeader.text` and `FastHeader.integer` equal ``parsing._text`` and
  ``parsing._integer`` on that data set.

Every rule here copies a pydicom 3.0 behaviour, including the surprising ones; the
tests compare both paths on all of pydicom's test files.

`header` holds the result, `FastHeader`; `reader` reads the bytes (`read_fast_header`);
`values` decodes each value, per VR, to the JSON model and to text and integers.
"""

from dicomweb.fastheader.header import RECORD_INTEGER_KEYWORDS, RECORD_TEXT_KEYWORDS, FastHeader
from dicomweb.fastheader.reader import read_fast_header

__all__ = ["RECORD_INTEGER_KEYWORDS", "RECORD_TEXT_KEYWORDS", "FastHeader", "read_fast_header"]
