"""The result of `read_fast_header`: `FastHeader`, a file's header as pydicom sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from dicomweb.fastheader.values import _Element, _integer, _text

BulkLocations = dict[str, list[int] | None]

_FIRST_PIXEL_TAG: Final = 0x7FE00008

# What dicomweb.pixels.frames.locate_frames reads from the header: SamplesPerPixel,
# PhotometricInterpretation, NumberOfFrames, Rows, Columns, BitsAllocated, Extended
# Offset Table and its lengths.
_FRAME_TAGS: Final = frozenset(
    {0x00280002, 0x00280004, 0x00280008, 0x00280010, 0x00280011, 0x00280100}
    | {0x7FE00001, 0x7FE00002}
)

# The attributes dicomweb.parsing.extract reads with _text and _integer. read_fast_header
# evaluates them once, and refuses a file for which one of them would raise.
RECORD_TEXT_KEYWORDS: Final = (
    *("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"),
    *("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex"),
    *("StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription"),
    *("ReferringPhysicianName", "Modality", "SeriesDescription", "SeriesDate"),
    *("SeriesTime", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"),
)
RECORD_INTEGER_KEYWORDS: Final = (
    *("SeriesNumber", "InstanceNumber", "Rows", "Columns", "NumberOfFrames"),
    "BitsAllocated",
)


# --------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FastHeader:
    """The header of a PS3.10 file, as the pydicom path of `dicomweb.parsing` sees it."""

    transfer_syntax_uid: str
    """(0002,0010) Transfer Syntax UID, as ``parsing._text(ds.file_meta, ...)`` gives it."""
    model: dict[str, Any]
    """The DICOM JSON model that ``instance_json`` builds, without pixel data."""
    bulk_locations: BulkLocations
    """The bulk locations that ``instance_json`` returns, without pixel data."""
    pixel_data_offset: int | None
    """File offset of the top-level pixel data element's tag (where pydicom stopped)."""
    resource_path: str
    """The resource path given to read_fast_header, which `model`'s BulkDataURIs use."""
    _elements: dict[int, _Element] = field(repr=False, compare=False)
    _texts: dict[int, str | None] = field(repr=False, compare=False)
    _integers: dict[int, int | None] = field(repr=False, compare=False)
    # Per bulk value, in model order: its URI below <resource path>/bulkdata/, and its
    # location.
    _bulk: list[tuple[str, list[int] | None]] = field(repr=False, compare=False)
    _implicit: bool = field(repr=False, compare=False)

    def __contains__(self, keyword_or_tag: object) -> bool:
        """Whether the data set holds the element, as ``keyword in ds`` does."""
        if not isinstance(keyword_or_tag, str | int):
            return False
        tag = _tag(keyword_or_tag)
        return tag is not None and tag in self._elements

    def text(self, keyword_or_tag: str | int) -> str | None:
        """``parsing._text(ds, keyword)``: the value as text, None when absent or empty.

        Raises TypeError for a sequence, and ValueError for a binary value sent as a
        BulkDataURI (its bytes are not kept). read_fast_header makes sure neither
        happens for `RECORD_TEXT_KEYWORDS`.
        """
        tag = _tag(keyword_or_tag)
        if tag is None:
            return None
        if tag in self._texts:
            return self._texts[tag]
        element = self._elements.get(tag)
        return None if element is None else _text(element)

    def integer(self, keyword_or_tag: str | int) -> int | None:
        """``parsing._integer(ds, keyword)``: the value as an integer, None if it is not one
        (an infinite DS or floating point value included)."""
        tag = _tag(keyword_or_tag)
        if tag is None:
            return None
        if tag in self._integers:
            return self._integers[tag]
        element = self._elements.get(tag)
        return None if element is None else _integer(element)

    def instance_json(
        self, pixel_data: tuple[str, str] | None, resource_path: str | None = None
    ) -> tuple[bytes, bytes]:
        """``dicomjson.instance_json(ds, resource_path, threshold, pixel_data)``.

        `resource_path` defaults to the one given to read_fast_header; another one can
        be given, such as one made of the UIDs that text() reads.
        """
        if resource_path is None or resource_path == self.resource_path:
            resource_path = self.resource_path
            model = dict(self.model)
            locations = dict(self.bulk_locations)
        else:
            model, locations = self._rebased(resource_path)
        if pixel_data is not None:
            tag, vr = pixel_data
            model[tag] = {"vr": vr, "BulkDataURI": f"{resource_path}/bulkdata/{tag}"}
            locations[tag] = None
        return orjson.dumps(model, option=orjson.OPT_SORT_KEYS), orjson.dumps(locations)

    def _rebased(self, resource_path: str) -> tuple[dict[str, Any], BulkLocations]:
        """The model and bulk locations for another resource path (copied on write)."""
        model = dict(self.model)
        locations: BulkLocations = {}
        for suffix, location in self._bulk:
            uri = f"{resource_path}/bulkdata/{suffix}"
            locations[uri.split("/bulkdata/", 1)[1]] = location
            parts = suffix.split("/")
            dataset = model
            for i in range(0, len(parts) - 1, 2):
                sequence = dataset[parts[i]] = dict(dataset[parts[i]])
                items = sequence["Value"] = list(sequence["Value"])
                index = int(parts[i + 1]) - 1
                dataset = items[index] = dict(items[index])
            dataset[parts[-1]] = {**dataset[parts[-1]], "BulkDataURI": uri}
        return model, locations

    def frame_header(self) -> Dataset:
        """A pydicom data set with what ``pixels.frames.locate_frames`` reads.

        It holds the transfer syntax, and as raw elements at their file positions the
        elements locate_frames reads and the last top-level element, where
        locate_frames then resumes its scan. ``locate_frames(fp, header.frame_header())``
        gives what ``locate_frames(fp, ds)`` gives for the pydicom path's data set. The
        last element's value may be left out: the data set is for locate_frames only.
        """
        tags = [tag for tag in self._elements if tag in _FRAME_TAGS]
        before_pixels = [tag for tag in self._elements if tag < _FIRST_PIXEL_TAG]
        if before_pixels and before_pixels[-1] not in tags:
            tags.append(before_pixels[-1])  # elements are in ascending order
        elements: dict[BaseTag, DataElement | RawDataElement] = {}
        for tag in tags:
            vr, raw, _, _, value_pos, length = self._elements[tag]
            elements[BaseTag(tag)] = RawDataElement(
                BaseTag(tag), vr, length, raw, value_pos, self._implicit, True
            )
        ds = Dataset(elements)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = UID(self.transfer_syntax_uid)
        return ds


# --------------------------------------------------------------------------------------
# Dictionary look-ups, cached
# --------------------------------------------------------------------------------------

_CACHE_LIMIT: Final = 65536
_keyword_tags: dict[str, int | None] = {}


def _tag(keyword_or_tag: str | int) -> int | None:
    if isinstance(keyword_or_tag, int):
        return keyword_or_tag
    try:
        return _keyword_tags[keyword_or_tag]
    except KeyError:
        tag = tag_for_keyword(keyword_or_tag)
        if len(_keyword_tags) < _CACHE_LIMIT:
            _keyword_tags[keyword_or_tag] = tag
        return tag
