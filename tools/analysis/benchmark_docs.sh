#!/usr/bin/env bash
# Regenerate docs/benchmark.md: every method on DeiT-T students at batch 8, 224 px, on this machine's
# CPU (about 25 minutes on 2 cores for the DeiT-T rows, about an hour more for the Swin-L ScaleKD
# rows; run it on a quiet machine). SpectralKD's configs use their CaiT-S24 teacher, DeiT's
# distillation token its RegNetY-16GF teacher (timm), ScaleKD Swin-L, OFA and PAT DeiT-T teaching a
# ResNet-18, the others the DeiT-S teacher.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
"$PY" tools/analysis/benchmark.py \
  configs/vitkd/deit-s_kd_deit-t_4xb256-300e_in1k.py \
  configs/vitkd/deit-s_hardkd_deit-t_4xb256-300e_in1k.py \
  configs/kd/deit-s_nkd_deit-t_4xb256-300e_in1k.py \
  configs/kd/deit-s_dkd_deit-t_4xb256-300e_in1k.py \
  configs/deit/regnety-16gf_deit-distill_deit-t_4xb256-300e_in1k.py \
  configs/vitkd/deit-s_vitkd_deit-t_4xb256-300e_in1k.py \
  configs/vitkd/deit-s_fitnet-last_deit-t_4xb256-300e_in1k.py \
  configs/vitkd/deit-s_mgd_deit-t_4xb256-300e_in1k.py \
  configs/spectralkd/cait-s24_spectralkd_deit-tiny_2xb256-400e_in1k.py \
  configs/scalekd/swin-l_scalekd_resnet50_8xb32-100e_in1k.py \
  configs/scalekd/swin-l_scalekd_mobilenet-v1_8xb32-100e_in1k.py \
  configs/ofa/deit-t_ofa_resnet18_8xb64-100e_in1k.py \
  configs/pat/deit-t_pat_resnet18_4xb64-100e_in1k.py \
  --batch 8 --size 224 --iters 12 --warmup 3 \
  --sweep-only 'deit-s_kd_deit-t' --sweep-batch 2 4 8 --sweep-size 112 160 224 \
  --cached --cached-topk 10 --cached-only 'deit-s_(kd|dkd)_deit-t' \
  --out-dir work_dirs/benchmark --markdown docs/benchmark.md "$@"
mkdir -p docs/figures
cp work_dirs/benchmark/deit-s_kd_deit-t_4xb256-300e_in1k_sweep.png docs/figures/benchmark_sweep_kd.png
