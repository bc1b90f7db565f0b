"""Convert a timm CaiT checkpoint for ImageClassifier(backbone=mmkd_ext.CaiT, LinearClsHead).

    python tools/model_converters/timm_cait_to_mmkd.py SRC.pth DST.pth

SRC: a timm CaiT state dict (e.g. the released ``cait_s24_224`` weights: a dict with the weights
under ``model``, or the bare state dict). DST: ``{'state_dict': ...}`` with our keys (see
``mmkd_ext.models.backbones.cait.convert_timm_cait``), loadable as ``teacher_checkpoint`` or with
``load_from``. SRC is read with mmkd_ext's checkpoint policy (``mmkd_ext.utils.checkpoint``):
tensors, no code.
"""
import argparse
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from mmkd_ext.models.backbones.cait import convert_timm_cait  # noqa: E402
from mmkd_ext.utils.checkpoint import load_checkpoint_file, unwrap_state_dict  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src')
    parser.add_argument('dst')
    args = parser.parse_args(argv)
    ckpt = load_checkpoint_file(args.src, map_location='cpu')
    state = convert_timm_cait(unwrap_state_dict(ckpt, keys=('model', 'state_dict', 'model_ema')))
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save({'state_dict': state}, args.dst)
    print(f'Wrote {len(state)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
