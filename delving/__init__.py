"""delving: He et al. 2015, "Delving Deep into Rectifiers", as a PyTorch / Lightning / timm / W&B package.

Importing the package registers its models in timm's registry: ``timm.create_model("delving_plain", depth=30)``.
The science core (``delving.layers``, ``delving.init``, ``delving.models``, ``delving.analysis``) needs only
torch and timm.
"""

from delving import models  # noqa: F401  (registers delving_* in timm)

__version__ = "0.1.0"
