"""delving: He et al. 2015, "Delving Deep into Rectifiers", as a PyTorch / Lightning / timm / W&B package.

Layers, bottom to top (imports point down only):

- ``delving.nn``: the science core in torch alone (activations, PReLU, init, moments, LSUV, probes);
- ``delving.models`` (tables in the paper's terms, timm entrypoints) and ``delving.data`` (DataModules);
- ``delving.experiment``: configs, the LightningModule, callbacks, W&B, training, sweeps, evaluation;
- ``delving.studies``: reading finished runs (loader, summaries, slopes, report, dashboard);
- ``delving.cli``: the ``delving`` command.

Importing the package registers its models in timm's registry, so ``timm.create_model("delving_plain",
depth=30)`` works after ``import delving``. It does so without importing torch itself: the registration runs
when timm is (or has been) imported, so that ``delving --help`` answers without loading torch.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_LAZY = {"nn", "models", "data", "experiment", "studies"}


def __getattr__(name: str):
    # PEP 562: ``delving.nn`` etc. on first use, so the CLI's help pays for no torch import.
    if name in _LAZY:
        return importlib.import_module(f"delving.{name}")
    raise AttributeError(f"module 'delving' has no attribute {name!r}")


class _RegisterAfterTimm(importlib.abc.MetaPathFinder):
    """Import ``delving.models`` (the timm registrations) right after ``timm`` itself has been imported.

    Why by hand: timm has no plugin entry point for registries, and importing ``delving.models`` eagerly would
    cost every ``import delving`` (and the CLI's ``--help``) the 2-4 s import of torch and timm.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps find_spec below from finding us again
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        exec_timm = spec.loader.exec_module

        def exec_module(module):
            exec_timm(module)
            importlib.import_module("delving.models")

        spec.loader.exec_module = exec_module
        return spec


if "timm" in sys.modules:
    importlib.import_module("delving.models")
elif not any(isinstance(f, _RegisterAfterTimm) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterTimm())
