"""Convert a timm MobileNet-V1 checkpoint (``mobilenetv1_100``) into mmkd_ext.MobileNetV1 keys.

    python tools/model_converters/timm_mobilenet_v1_to_mmkd.py SRC.pth DST.pth

SRC: a timm ``mobilenetv1_100`` state dict (bare, or under ``state_dict`` / ``model`` /
``model_ema`` as timm's training script saves it). DST: ``{'state_dict': ...}`` for
``ImageClassifier(backbone=mmkd_ext.MobileNetV1, neck=GlobalAveragePooling, head=LinearClsHead)``
(see ``mmkd_ext.models.backbones.mobilenet_v1.convert_timm_mobilenet_v1``), loadable with
``load_from`` or as a checkpoint. timm's MobileNet-V1 weights are trained with ReLU6: build the
backbone with ``act_cfg=dict(type='ReLU6')`` for them. Only tensors are read (safe ``torch.load``).
"""
import argparse
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
from mmkd_ext.models.backbones.mobilenet_v1 import convert_timm_mobilenet_v1  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src')
    parser.add_argument('dst')
    args = parser.parse_args(argv)
    ckpt = torch.load(args.src, map_location='cpu', weights_only=True)
    for key in ('state_dict', 'model', 'model_ema'):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    state = convert_timm_mobilenet_v1({k: v for k, v in ckpt.items() if torch.is_tensor(v)})
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save({'state_dict': state}, args.dst)
    print(f'Wrote {len(state)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
