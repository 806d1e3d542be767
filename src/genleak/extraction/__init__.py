"""Training-data extraction (generate-and-filter) and memorisation detection (t-error ranking)."""

from genleak._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ExtractionConfig": "genleak.extraction.extract",
    "ExtractionResult": "genleak.extraction.extract",
    "extract": "genleak.extraction.extract",
    "write_extraction": "genleak.extraction.extract",
    "Neighbours": "genleak.extraction.nn",
    "nearest": "genleak.extraction.nn",
    "rms_distance": "genleak.extraction.nn",
}

__all__ = sorted(_EXPORTS)
lazy_exports(__name__, _EXPORTS)
