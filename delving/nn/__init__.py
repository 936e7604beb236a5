"""The science core: the paper's layers, initializations and probes, in torch alone.

- ``activations``: the activation factory (Sec. 2.1), by name and channel count.
- ``prelu``: PReLU (Eq. 1) with a faster CPU backward; ``prelu_cpu``: its fused kernel.
- ``pooling``: spatial pyramid pooling (Sec. 2.3).
- ``init``: He init (Eq. 10/14/15), the paper's Xavier, fc stds, variance-preserving gains.
- ``moments``: second moments of any activation (the gains of the variance-preserving init).
- ``lsuv``: layer-sequential unit-variance init (Mishkin & Matas 2016).
- ``probes``: what a net does to a batch: learned slopes per layer, the signal's std per layer (Sec. 2.2).
"""

from delving.nn.activations import ACTIVATIONS, make_activation
from delving.nn.init import initialize
from delving.nn.pooling import SpatialPyramidPool
from delving.nn.prelu import PReLU
from delving.nn.probes import slope_profile, variance_profile

__all__ = ["ACTIVATIONS", "make_activation", "PReLU", "SpatialPyramidPool", "initialize", "slope_profile",
           "variance_profile"]
