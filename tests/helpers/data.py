"""A datamodule over a generated folder, set up as training sets it up."""

from src.data.image_folder import ImageFolderDataModule


def datamodule(data_dir, **kwargs) -> ImageFolderDataModule:
    """`ImageFolderDataModule` without worker processes, after `prepare_data` and `setup`."""
    dm = ImageFolderDataModule(data_dir, **{"num_workers": 0, **kwargs})
    dm.prepare_data()
    dm.setup("fit")
    return dm
