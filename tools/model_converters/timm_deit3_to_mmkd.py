"""Convert a timm DeiT III checkpoint into the keys of mmpretrain's DeiT3 checkpoints.

    python tools/model_converters/timm_deit3_to_mmkd.py SRC.pth DST.pth

SRC: a timm ``deit3_*`` state dict or an original facebookresearch/deit DeiT III checkpoint (the
weights under ``model``, or the bare state dict). DST: ``{'state_dict': ...}`` for
``ImageClassifier(backbone=mmkd_ext.DeiT3, head=VisionTransformerClsHead)``, with the keys of
mmpretrain's DeiT3 checkpoints (see ``mmkd_ext.models.backbones.deit3.convert_timm_deit3``),
loadable as ``teacher_checkpoint`` or with ``load_from``. OpenMMLab's published DeiT3 checkpoints
need no conversion. Only tensors are read (safe ``torch.load``).
"""
import argparse
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from mmkd_ext.models.backbones.deit3 import convert_timm_deit3  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src')
    parser.add_argument('dst')
    args = parser.parse_args(argv)
    ckpt = torch.load(args.src, map_location='cpu', weights_only=True)
    for key in ('model', 'state_dict', 'model_ema'):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    state = convert_timm_deit3({k: v for k, v in ckpt.items() if torch.is_tensor(v)})
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save({'state_dict': state}, args.dst)
    print(f'Wrote {len(state)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
