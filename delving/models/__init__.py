"""Architectures as tables, one builder, and their timm registry entries (importing this registers them)."""

from delving.models.builder import FC, SPP, Conv, DelvingNet, Pool, Residual, build
from delving.models.factory import create_initialized, create_model
from delving.models.paper import PAPER_MODELS, PaperModel, table_1, table_3
from delving.models.plain import delving_plain, delving_resplain, plain_table

__all__ = ["Conv", "Residual", "Pool", "SPP", "FC", "DelvingNet", "build", "plain_table", "delving_plain",
           "delving_resplain", "PAPER_MODELS", "PaperModel", "table_1", "table_3", "create_initialized", "create_model"]
