"""Data modules by name (the config's ``data.name``); each has ``from_config``, ``in_chans`` and ``num_classes``."""

from delving.data.digits import DigitsDataModule
from delving.data.folder import FolderDataModule
from delving.data.random import RandomDataModule
from delving.errors import DelvingError

DATAMODULES = {"digits": DigitsDataModule, "folder": FolderDataModule, "random": RandomDataModule}
FFCV_MISSING = ("data.name=ffcv needs FFCV: `make system-deps` then `pip install -e '.[ffcv]'`, "
                "or use data.name=folder (the torchvision fallback, same augmentations)")


def datamodule_class(name: str) -> type:
    """The DataModule for ``data.name``; FFCV (and numba) is imported only when asked for."""
    if name != "ffcv":
        return DATAMODULES[name]
    try:
        from delving.data.ffcv import FFCVDataModule
    except ImportError as err:
        raise DelvingError(f"{FFCV_MISSING} ({err})") from None
    return FFCVDataModule


__all__ = ["DATAMODULES", "DigitsDataModule", "FolderDataModule", "RandomDataModule", "datamodule_class"]
