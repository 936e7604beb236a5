"""Data modules by name (the config's ``data.name``); each has ``from_config``, ``in_chans`` and ``num_classes``."""

from delving.data.digits import DigitsDataModule
from delving.data.folder import FolderDataModule
from delving.data.mnist5k import MNIST5kDataModule
from delving.data.random import RandomDataModule
from delving.errors import DelvingError

DATAMODULES = {"digits": DigitsDataModule, "folder": FolderDataModule, "mnist5k": MNIST5kDataModule,
               "random": RandomDataModule}
FFCV_MISSING = ("data.name=ffcv needs FFCV: `make system-deps` then `pip install -e '.[ffcv]'`, "
                "or use data.name=folder (the torchvision fallback, same augmentations)")


def load_ffcv():
    """``delving.data.ffcv``, imported on first use (FFCV and numba cost seconds), or a one-line error."""
    try:
        from delving.data import ffcv
    except ImportError as err:
        raise DelvingError(f"{FFCV_MISSING} ({err})") from None
    return ffcv


def datamodule_class(name: str) -> type:
    """The DataModule for ``data.name``."""
    return load_ffcv().FFCVDataModule if name == "ffcv" else DATAMODULES[name]


__all__ = ["DATAMODULES", "DigitsDataModule", "FolderDataModule", "MNIST5kDataModule", "RandomDataModule",
           "datamodule_class", "load_ffcv"]
