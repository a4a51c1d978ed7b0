"""A standards-first DICOMweb server (DICOM PS3.18)."""

__version__ = "0.1.0"
