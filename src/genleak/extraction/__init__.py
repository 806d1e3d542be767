"""Training-data extraction (generate-and-filter) and memorisation detection (t-error ranking)."""

from genleak.extraction.extract import ExtractionConfig, ExtractionResult, extract, write_extraction
from genleak.extraction.nn import Neighbours, nearest, rms_distance

__all__ = ["ExtractionConfig", "ExtractionResult", "Neighbours", "extract", "nearest", "rms_distance", "write_extraction"]
