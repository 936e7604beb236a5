#!/bin/bash
# An ImageNet recipe under torchrun, on one or several machines (run this on each, with its NODE_RANK):
#   NNODES=2 NODE_RANK=0 MASTER=host0 GPUS=8 scripts/torchrun_imagenet.sh experiments/imagenet/model_c_prelu.yaml \
#       /shared/imagenet-ffcv /shared/runs
# Lightning's TorchElasticEnvironment reads the ranks torchrun sets; FFCV shards by global rank.
set -euo pipefail

CONFIG=${1:?usage: scripts/torchrun_imagenet.sh CONFIG FFCV_ROOT OUT_DIR}
DATA=${2:?FFCV_ROOT: a folder with train.beton and val.beton}
OUT=${3:?OUT_DIR: on storage every node sees}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER=${MASTER:-127.0.0.1}
PORT=${PORT:-29500}
GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}

exec .venv/bin/torchrun --nnodes="$NNODES" --node-rank="$NODE_RANK" --nproc-per-node="$GPUS" \
    --master-addr="$MASTER" --master-port="$PORT" \
    -m delving fit --config "$CONFIG" --data.root="$DATA" --out_dir="$OUT" \
    --trainer.accelerator=gpu --trainer.strategy=ddp \
    --trainer.devices="$GPUS" --trainer.num_nodes="$NNODES"
