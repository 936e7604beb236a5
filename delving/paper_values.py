"""The paper's reported numbers that our measurements are set beside (He et al. 2015, arXiv v1), in one place.

Only published values live here; what a run measures is computed elsewhere (``delving.studies.report``, ``delving.studies.slopes``).
"""

from __future__ import annotations

# Table 1: learned PReLU slopes of the 14-layer model, layer -> (channel-shared a, channel-wise mean a_i).
# Network order: 11 convs (conv1, stage 2: conv21-24, stage 3: conv31-36), then fc1, fc2 (fc3 feeds the softmax).
TABLE1_SLOPES: dict[str, tuple[float, float]] = {
    "conv1": (0.681, 0.596),
    "conv21": (0.103, 0.321), "conv22": (0.099, 0.204), "conv23": (0.228, 0.294), "conv24": (0.561, 0.464),
    "conv31": (0.126, 0.196), "conv32": (0.089, 0.152), "conv33": (0.124, 0.145), "conv34": (0.062, 0.124),
    "conv35": (0.008, 0.134), "conv36": (0.210, 0.198),
    "fc1": (0.063, 0.074), "fc2": (0.031, 0.075),
}
INITIAL_SLOPE = 0.25  # a_i = 0.25 at the start "throughout this paper" (Sec. 2.1)

# Table 2: the 14-layer model on ImageNet 2012 val, 10-view, top-1 / top-5 error in percent.
TABLE2_ERRORS: dict[str, tuple[float, float]] = {
    "relu": (33.82, 13.34),
    "prelu_shared": (32.71, 12.87),
    "prelu": (32.64, 12.75),   # channel-wise, our "prelu"
}

# Sec. 2.2, Fig. 2 (22-layer model B, ReLU) and Fig. 3 (30-layer small model, ReLU): what each init does.
FIG_CLAIMS: dict[tuple[int, str], str] = {
    (22, "xavier"): "converges, later than He (Fig. 2)",
    (22, "he"): "converges, starts reducing error earlier (Fig. 2)",
    (30, "xavier"): "completely stalls (Fig. 3)",
    (30, "he"): "converges (Fig. 3)",
}

# The ImageNet setting of the Table 1/2 and Fig. 3 models (Sec. 3, Table 1), beside which a small run is described.
IMAGENET_SETTING: dict[str, str] = {
    "data": "ImageNet 2012, 1.28 M training images, 1000 classes",
    "input": "224×224 crops of images resized to a shorter side of 256",
    "widths": "64 / 128 / 256 filters per stage",
    "clipping": "none",
    "lr": "1e-2 → 1e-3 → 1e-4, switched when the error plateaus",
    "epochs": "75 (Table 2)",
    "weight_decay": "5e-4, none on the slopes",
    "batch": "128",
}
