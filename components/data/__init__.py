"""The data layer: read a source, write and load the prepared on-disk format."""

from components.data.images import from_unit_range, make_grid, resize_images, save_image_grid, to_unit_range
from components.data.prepared import PreparedDataset, load_prepared, prepare_dataset, write_prepared
from components.data.sources import RawImages, read_source

__all__ = [
    "PreparedDataset",
    "RawImages",
    "from_unit_range",
    "load_prepared",
    "make_grid",
    "prepare_dataset",
    "read_source",
    "resize_images",
    "save_image_grid",
    "to_unit_range",
    "write_prepared",
]
