#!/usr/bin/env bash
# bash tools/dist_train.sh CONFIG GPUS [train.py options]   (torchrun; NNODES/NODE_RANK/PORT/MASTER_ADDR
# for several nodes; on a machine without CUDA the processes run on the CPU over gloo)
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
SCRIPT=${MMKD_DIST_SCRIPT:-train.py}  # tools/dist_build_teacher_cache.sh runs build_teacher_cache.py

PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$(dirname "$0")/$SCRIPT" "$CONFIG" --launcher pytorch "${@:3}"
