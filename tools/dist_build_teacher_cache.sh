#!/usr/bin/env bash
# bash tools/dist_build_teacher_cache.sh CONFIG GPUS --epochs E [build_teacher_cache.py options]
# One process per GPU (torchrun), each building its rank's shards of a cache for a GPUS-process
# training run; NNODES/NODE_RANK/PORT/MASTER_ADDR as for dist_train.sh. Run again to resume.
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$(dirname "$0")/build_teacher_cache.py" "$CONFIG" --launcher pytorch "${@:3}"
