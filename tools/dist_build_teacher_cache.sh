#!/usr/bin/env bash
# bash tools/dist_build_teacher_cache.sh CONFIG GPUS --epochs E [build_teacher_cache.py options]
# One process per GPU (torchrun, as tools/dist_train.sh: NNODES/NODE_RANK/PORT/MASTER_ADDR), each
# building its rank's shards of a cache for a GPUS-process training run. Run again to resume.
MMKD_DIST_SCRIPT=build_teacher_cache.py exec bash "$(dirname "$0")/dist_train.sh" "$@"
