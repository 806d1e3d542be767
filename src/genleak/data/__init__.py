"""Data layer: image sources, ``ImageSet`` and membership splits.

Images everywhere in genleak are ``torch.float32`` NCHW tensors in [-1, 1]; the conversions live
in :mod:`genleak.data.transforms`. A split is stored as a JSON manifest (source spec + ids +
sha256 per image) and re-verified against its source on every load. Folder, list and HF dataset
sources are lazy: their images are decoded per batch (``ImageSet.batches``), never all at once.
"""

from genleak.data.images import ImageSet, iter_batches, sample_hash
from genleak.data.sources import (
    cifar10_source,
    digits_source,
    folder_source,
    hf_source,
    list_source,
    load_source,
    npz_source,
    parse_source_spec,
)
from genleak.data.split import MembershipSplit, make_split, split_from_index_file, split_from_sources

__all__ = [
    "ImageSet",
    "MembershipSplit",
    "cifar10_source",
    "digits_source",
    "folder_source",
    "hf_source",
    "iter_batches",
    "list_source",
    "load_source",
    "make_split",
    "npz_source",
    "parse_source_spec",
    "sample_hash",
    "split_from_index_file",
    "split_from_sources",
]
