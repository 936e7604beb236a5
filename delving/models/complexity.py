"""Size of a registered model: parameters, multiply-adds at an input size, depth in conv + fc layers, beside the
paper's numbers (Table 3's complexity, the depths of Tables 1 and 3).

Multiply-adds come from torch's own ``FlopCounterMode`` (FLOPs / 2), on the meta device: nothing is allocated or
computed, so model C at 480×480 costs milliseconds. Like the paper's figure, it counts conv and fc layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from delving.errors import DelvingError
from delving.models.factory import create_model
from delving.models.paper import PAPER_MODELS


@dataclass(frozen=True)
class ModelSize:
    name: str
    input_size: int
    params: int
    slope_params: int          # PReLU slopes among params
    mult_adds: float
    depth: int                 # conv + fc layers
    paper_mult_adds: float | None
    paper_depth: int | None

    @property
    def mult_adds_ratio(self) -> float | None:
        return self.mult_adds / self.paper_mult_adds if self.paper_mult_adds else None


def model_size(name: str, input_size: int = 224, activation: str = "relu", num_classes: int = 1000,
               in_chans: int = 3, **kwargs) -> ModelSize:
    """Count ``name``'s parameters and multiply-adds for one ``in_chans`` × ``input_size``² image."""
    with torch.device("meta"):
        model = create_model(name, activation, num_classes=num_classes, in_chans=in_chans, **kwargs)
        x = torch.empty(1, in_chans, input_size, input_size)
    # timm's cfg: the paper's models need a large enough map for their SPP levels
    smallest = ((getattr(model, "pretrained_cfg", None) or {}).get("min_input_size") or (None,))[-1]
    if smallest and input_size < smallest:
        raise DelvingError(f"--size {input_size} is too small for {name}; valid: >= {smallest}")
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(x)
    except RuntimeError as err:  # a map shrunk below a kernel or pooling window on the way
        raise DelvingError(f"--size {input_size} is too small for {name} ({str(err).splitlines()[0]})") from None
    paper = PAPER_MODELS.get(name)
    return ModelSize(
        name=name, input_size=input_size,
        params=sum(p.numel() for p in model.parameters()),
        slope_params=sum(p.numel() for m in model.modules() if isinstance(m, nn.PReLU) for p in m.parameters()),
        mult_adds=counter.get_total_flops() / 2,
        depth=sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules()),
        paper_mult_adds=paper.mult_adds if paper and input_size == 224 else None,
        paper_depth=paper.depth if paper else None,
    )


def markdown(sizes: list[ModelSize]) -> str:
    """A table of model sizes with the paper's numbers and the ratio where the paper gives them."""
    lines = ["| model | input | params | PReLU slopes | mult-adds | paper mult-adds | ratio | depth | paper depth |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in sizes:
        paper = f"{s.paper_mult_adds:.3g}" if s.paper_mult_adds else "–"
        ratio = f"{s.mult_adds_ratio:.3f}" if s.mult_adds_ratio else "–"
        lines.append(f"| {s.name} | {s.input_size} | {s.params:,} | {s.slope_params:,} | {s.mult_adds:.4g} | {paper} "
                     f"| {ratio} | {s.depth} | {s.paper_depth or '–'} |")
    return "\n".join(lines)
