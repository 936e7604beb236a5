"""Data modules by name (the config's ``data.name``); each has ``from_config``, ``in_chans`` and ``num_classes``."""

from delving.data.digits import DigitsDataModule
from delving.data.folder import FolderDataModule
from delving.data.random import RandomDataModule

DATAMODULES = {"digits": DigitsDataModule, "folder": FolderDataModule, "random": RandomDataModule}

__all__ = ["DATAMODULES", "DigitsDataModule", "FolderDataModule", "RandomDataModule"]
