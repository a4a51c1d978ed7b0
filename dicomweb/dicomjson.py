"""DICOM JSON Model (PS3.18 F.2) of stored instances, with BulkDataURIs for large values."""

from __future__ import annotations

from typing import Any

import orjson
from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

# Where a bulk value lies in the stored file: [offset, length], or None when it is
# inside a sequence (nested offsets are not tracked; serving it needs a parse).
BulkLocations = dict[str, list[int] | None]


def raw_positions(ds: Dataset) -> dict[int, list[int]]:
    """[value offset, length] of each top-level element not decoded yet."""
    positions: dict[int, list[int]] = {}
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset decodes its elements
        # keep_deferred: without it, an element whose value is None is decoded here,
        # outside the checks that turn a malformed value into a refusal.
        raw = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement) and raw.value_tell is not None:
            positions[int(tag)] = [raw.value_tell, raw.length]
    return positions


def instance_json(
    ds: Dataset,
    resource_path: str,
    bulk_data_threshold: int,
    pixel_data: tuple[str, str] | None,
    positions: dict[int, list[int]] | None = None,
) -> tuple[bytes, bytes]:
    """Return (metadata, bulk locations), both as JSON bytes.

    `resource_path` is the instance's path below the service root; BulkDataURIs are
    `<resource_path>/bulkdata/<tag>[/<item>/<tag>...]`, relative to the service root.
    `pixel_data` is (tag, VR) of the pixel data element that the header parse stopped
    before, which is always referred to by BulkDataURI. `positions` are the elements'
    places in the file (see raw_positions) when `ds` was decoded already.
    """
    locations: BulkLocations = {}
    if positions is None:
        positions = raw_positions(ds)
    model = _dataset(ds, f"{resource_path}/bulkdata", bulk_data_threshold, locations, positions)
    if pixel_data is not None:
        tag, vr = pixel_data
        model[tag] = {"vr": vr, "BulkDataURI": f"{resource_path}/bulkdata/{tag}"}
        locations[tag] = None
    return orjson.dumps(model, option=orjson.OPT_SORT_KEYS), orjson.dumps(locations)


def _dataset(
    ds: Dataset,
    uri_prefix: str,
    threshold: int,
    locations: BulkLocations,
    positions: dict[int, list[int]],
) -> dict[str, Any]:
    """`positions` holds top-level elements' places; nested data sets pass none."""
    model: dict[str, Any] = {}
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset yields elements
        position = positions.get(int(tag))
        elem = ds[tag]
        key = f"{tag:08X}"
        if elem.VR == "SQ":
            model[key] = _sequence(elem, f"{uri_prefix}/{key}", threshold, locations)
        elif elem.VR in BINARY_VRS and _length(elem) > threshold:
            uri = f"{uri_prefix}/{key}"
            model[key] = {"vr": elem.VR, "BulkDataURI": uri}
            locations[uri.split("/bulkdata/", 1)[1]] = position
        else:
            model[key] = elem.to_json_dict(None, threshold)
    return model


def _sequence(
    elem: DataElement, uri_prefix: str, threshold: int, locations: BulkLocations
) -> dict[str, Any]:
    items = [
        _dataset(item, f"{uri_prefix}/{number}", threshold, locations, {})
        for number, item in enumerate(elem.value, start=1)
    ]
    return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}


def _length(elem: DataElement) -> int:
    value = elem.value
    return len(value) if value is not None else 0
