"""Shared helpers for the paper-architecture tests and the script that writes their expected outputs."""

from __future__ import annotations

from pathlib import Path

import timm
import torch

import delving  # noqa: F401
from delving.models import create_initialized

EXPECTED = Path(__file__).parent / "expected"
MODELS = sorted(timm.list_models("delving_*"))
BIG = ("delving_model_a", "delving_model_b", "delving_model_c")  # 178M-331M parameters: slow tests
NUM_CLASSES = 10


def min_size(name: str) -> int:
    """The smallest input side the model takes, from its timm pretrained_cfg."""
    return timm.models.get_pretrained_cfg(name).min_input_size[-1]


def seeded_output(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, output) of the paper-initialized model in eval mode, everything seeded."""
    model = create_initialized(name, "paper", activation="prelu", in_chans=3, num_classes=NUM_CLASSES,
                               generator=torch.Generator().manual_seed(0)).eval()
    x = torch.randn(2, 3, min_size(name), min_size(name), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return x, model(x)


if __name__ == "__main__":  # python tests/paper_models.py: (re)write the expected outputs
    EXPECTED.mkdir(exist_ok=True)
    for model_name in MODELS:
        torch.save(seeded_output(model_name)[1], EXPECTED / f"{model_name}.pt")
        print("wrote", EXPECTED / f"{model_name}.pt")
