"""Data modules by name (the config's ``data.name``)."""

from delving.data.digits import DigitsDataModule

DATAMODULES = {"digits": DigitsDataModule}

__all__ = ["DATAMODULES", "DigitsDataModule"]
