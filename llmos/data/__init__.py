"""Data: read files into typed rows, clean, split and augment them, and keep them as dataset versions.

``Datasets`` (registry.py) is the entry point the CLI, the API and training use; the other modules are
pure functions over lists of rows, so they are tested without a store.
"""

from llmos.data.augment import AugmentOptions, AugmentReport, augment_rows
from llmos.data.clean import CleanOptions, CleanReport, clean_rows
from llmos.data.info import DatasetCounts, DatasetInfo, DatasetPreview, DatasetSource, Derivation, validated
from llmos.data.readers import Format, ReadOptions, read_table
from llmos.data.registry import Datasets, ImportOptions
from llmos.data.rows import ChatMessage, ClassifyRow, Row, SftRow, TagRow, Task
from llmos.data.split import SplitOptions, SplitReport, split_rows

__all__ = [
    "AugmentOptions", "AugmentReport", "ChatMessage", "ClassifyRow", "CleanOptions", "CleanReport", "DatasetCounts",
    "DatasetInfo", "DatasetPreview", "DatasetSource", "Datasets", "Derivation", "Format", "ImportOptions",
    "ReadOptions", "Row", "SftRow", "SplitOptions", "SplitReport", "TagRow", "Task", "augment_rows", "clean_rows",
    "read_table", "split_rows", "validated",
]
