"""Datasets, readers and splits (SPEC §3).

``load_dataset(name)`` returns :class:`ImageData` (float32 (N, C, H, W) in [0, 1],
int64 labels) for a registry name (``privtool data list``) or a user's
``folder:PATH`` / ``npz:PATH``; ``make_splits`` gives the seeded, stratified,
disjoint index sets a run records by :func:`index_hash`. One module per source
(``bundled``, ``idx_source``, ``torchvision_source``, ``folder_source``) holds
its datasets' specs; ``registry`` collects them.
"""

from privtool.data.registry import DATASETS, dataset_status, list_datasets, load_dataset
from privtool.data.spec import DatasetSpec, DatasetStatus, ImageData, data_root
from privtool.data.splits import index_hash, make_splits

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "DatasetStatus",
    "ImageData",
    "data_root",
    "dataset_status",
    "index_hash",
    "list_datasets",
    "load_dataset",
    "make_splits",
]
