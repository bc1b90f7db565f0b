"""Distillation checkpoint -> a plain student checkpoint (what mmpretrain / mmdet / mmseg load)."""
from typing import Optional

import torch

from mmkd_ext.utils.checkpoint import load_checkpoint_file, unwrap_state_dict


def export_student(src: str, dst: str, prefix: Optional[str] = None) -> dict:
    """Write the student's weights of the distillation checkpoint ``src`` to ``dst``.

    The distiller's ``student.`` prefix is removed and method parameters (projectors, generative
    blocks) are dropped, so the result loads into the student model as it is, e.g. with
    ``load_from=dst`` or ``init_cfg=dict(type='Pretrained', checkpoint=dst, prefix='backbone.')``.
    ``src`` is read with the checkpoint policy of :mod:`mmkd_ext.utils.checkpoint`.

    Args:
        src (str): A checkpoint of ``mmkd_ext.Distiller`` (e.g. ``work_dirs/X/epoch_300.pth``).
        dst (str): Where to write the student's checkpoint.
        prefix (str, optional): Keep only the student's keys under this prefix (e.g.
            ``'backbone.'``), unchanged. Defaults to None (all of them).

    Returns:
        dict: The saved dict, ``{'state_dict': ..., 'meta': ...}``.
    """
    ckpt = load_checkpoint_file(src, map_location='cpu')
    state = unwrap_state_dict(ckpt)
    student = {k[len('student.'):]: v for k, v in state.items() if k.startswith('student.')}
    if not student:
        some = ', '.join(list(state)[:5])
        raise ValueError(f'{src!r} holds no "student." weights (its keys look like: {some}); it is '
                         f'not a checkpoint of mmkd_ext.Distiller.')
    if prefix:
        student = {k: v for k, v in student.items() if k.startswith(prefix)}
        if not student:
            raise ValueError(f'No student weights under prefix {prefix!r}.')
    meta = dict(ckpt.get('meta', {}) or {})
    out_meta = {
        k: meta[k]
        for k in ('dataset_meta', 'epoch', 'iter', 'mmengine_version') if k in meta
    }
    out_meta['exported_from'] = 'mmkd_ext.Distiller'
    out = dict(state_dict=student, meta=out_meta)
    torch.save(out, dst)
    return out
