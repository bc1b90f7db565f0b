"""Convert a timm classifier checkpoint (ViT/DeiT, ConvNeXt, ResMLP) for mmpretrain's
ImageClassifier (mmkd_ext's ResMLP backbone for ResMLP), e.g. OFA's released CIFAR-100 teachers.

    python tools/model_converters/timm_to_mmpretrain.py SRC.pth DST.pth --arch vit

SRC: a timm state dict (bare, or under ``state_dict`` / ``model`` / ``model_ema``, as timm's
training script saves it). DST: ``{'state_dict': ...}`` with mmpretrain's keys (see
``mmkd_ext.models.timm_conversion``), loadable as ``teacher_checkpoint`` or with ``load_from``.
SRC is read with mmkd_ext's checkpoint policy (``mmkd_ext.utils.checkpoint``): tensors, no code.
"""
import argparse
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from mmkd_ext.models.timm_conversion import CONVERTERS, convert_timm_classifier  # noqa: E402
from mmkd_ext.utils.checkpoint import load_checkpoint_file, unwrap_state_dict  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src')
    parser.add_argument('dst')
    parser.add_argument('--arch', required=True, choices=sorted(CONVERTERS))
    args = parser.parse_args(argv)
    ckpt = load_checkpoint_file(args.src, map_location='cpu')
    state = unwrap_state_dict(ckpt, keys=('state_dict', 'model', 'model_ema'))
    state = convert_timm_classifier(state, args.arch)
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save({'state_dict': state}, args.dst)
    print(f'Wrote {len(state)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
