"""Architectures as tables, one builder, and their timm registry entries (importing this registers them)."""

from delving.models.builder import FC, SPP, Conv, DelvingNet, Pool, build
from delving.models.factory import create_initialized, create_model
from delving.models.paper import PAPER_MODELS, PaperModel, table_1, table_3
from delving.models.plain import delving_plain, plain_table

__all__ = ["Conv", "Pool", "SPP", "FC", "DelvingNet", "build", "plain_table", "delving_plain", "PAPER_MODELS",
           "PaperModel", "table_1", "table_3", "create_initialized", "create_model"]
