"""Data layer: dataset schema, Parquet reader -> Batch, id transforms, synthetic and public datasets."""

from .batch import Batch
from .dataset import Dataset
from .reader import ParquetReader, num_rows
from .schema import Axis, DatasetSchema, SparseFeature, load_schema
from .transforms import SparseIdTransform

__all__ = [
    "Axis",
    "Batch",
    "Dataset",
    "DatasetSchema",
    "ParquetReader",
    "SparseFeature",
    "SparseIdTransform",
    "load_schema",
    "num_rows",
]
