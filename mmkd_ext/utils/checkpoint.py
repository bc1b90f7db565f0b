"""How checkpoints are read on torch >= 2.6 (``torch.load(weights_only=True)`` by default).

MMEngine 0.10.7 calls ``torch.load`` without ``weights_only``, so on new torch a Runner checkpoint
(its message hub holds HistoryBuffers and numpy scalars) cannot be resumed, and some published
checkpoints do not load. Importing mmkd_ext replaces MMEngine's loader for local files with one that:

1. tries the safe loader (``weights_only=True``);
2. if the file needs classes beyond tensors, allows exactly the ones MMEngine itself writes (numpy
   arrays, dtypes and scalars; ``HistoryBuffer``; ``OrderedDict``/``defaultdict``) and loads again,
   still with the safe loader;
3. if it needs anything else, stops with an error naming those classes. Setting the environment
   variable ``MMKD_TRUST_CHECKPOINTS=1`` loads such a file with full pickle: only do that for files
   you trust, since unpickling can run arbitrary code.
"""
import importlib
import os
import os.path as osp
import pickle

from typing import Optional

import torch
import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.runner.checkpoint import CheckpointLoader

# Module-qualified names allowed in step 2 (prefix match on 'module.qualname').
SAFE_GLOBAL_PREFIXES = (
    'numpy.core.multiarray._reconstruct', 'numpy._core.multiarray._reconstruct',
    'numpy.core.multiarray.scalar', 'numpy._core.multiarray.scalar',
    'numpy.ndarray', 'numpy.dtype', 'numpy.dtypes.',
    'mmengine.logging.history_buffer.HistoryBuffer',
    'collections.OrderedDict', 'collections.defaultdict',
    # A HistoryBuffer pickles its bound statistics methods as getattr(buffer, 'mean'). The
    # weights-only unpickler calls only allow-listed callables, so what getattr returns is never run.
    'builtins.getattr',
)
TRUST_ENV = 'MMKD_TRUST_CHECKPOINTS'


def _import_global(qualified: str):
    # 'a.b.C' may be module 'a.b' + attribute 'C' or module 'a' + attribute 'b.C'.
    parts = qualified.split('.')
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(qualified)


def _numpy_dtype_classes():
    # numpy >= 1.25 builds dtypes of pickled arrays/scalars from the classes in numpy.dtypes; the
    # file does not name them as globals, so they are allowed here as a set.
    import numpy as np
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is None:
        return []
    return [getattr(dtypes, n) for n in dir(dtypes) if n.endswith('DType')]


def load_checkpoint_file(filename: str, map_location=None):
    """``torch.load`` for checkpoint files, with the policy of this module's docstring."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'Checkpoint file {filename!r} does not exist.')
    if not hasattr(torch.serialization, 'safe_globals'):
        # torch < 2.5 (e.g. 2.1 with OpenMMLab's prebuilt mmcv) has no allow-list API, and its
        # default torch.load is what MMEngine was written for.
        return torch.load(filename, map_location=map_location)
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        pass
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    unsafe = [g for g in needed if not g.startswith(SAFE_GLOBAL_PREFIXES)]
    if not unsafe:
        allowed = [_import_global(g) for g in needed] + _numpy_dtype_classes()
        with torch.serialization.safe_globals(allowed):
            return torch.load(filename, map_location=map_location, weights_only=True)
    if os.environ.get(TRUST_ENV) == '1':
        return torch.load(filename, map_location=map_location, weights_only=False)
    raise pickle.UnpicklingError(
        f'Checkpoint {filename!r} holds Python objects beyond tensors that are not known to be '
        f'safe: {unsafe}. If you trust this file, set {TRUST_ENV}=1 to load it with full pickle '
        f'(unpickling can run code), or re-save only its state_dict.')


def install_loader():
    """Make MMEngine's CheckpointLoader use :func:`load_checkpoint_file` for local paths."""
    CheckpointLoader.register_scheme(prefixes='', force=True)(load_checkpoint_file)


def unwrap_state_dict(ckpt) -> dict:
    """A loaded checkpoint -> {key: tensor}: the ``state_dict`` / ``model`` / ``module`` entry when
    there is one, ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes stripped, non-tensors
    dropped."""
    if not isinstance(ckpt, dict):
        raise TypeError(f'A checkpoint must hold a dict, got {type(ckpt).__name__}.')
    for key in ('state_dict', 'model', 'module'):
        if key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    out = {}
    for k, v in ckpt.items():
        if not torch.is_tensor(v):
            continue
        for prefix in ('module.', '_orig_mod.'):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_state_dict_with_report(model: nn.Module, checkpoint: str, min_matched: float = 0.5,
                            prefix: Optional[str] = None, logger: Optional[MMLogger] = None):
    """Load ``checkpoint`` into the teacher and report missing, unexpected and mis-shaped keys.

    Args:
        model: the teacher.
        checkpoint: a local path or URL (anything MMEngine's CheckpointLoader reads).
        min_matched: the fraction of the teacher's state-dict entries the checkpoint must fill;
            below it the teacher would be (almost) random, which is an error, not a warning.
        prefix: keep only keys under this prefix and strip it (e.g. 'backbone.').

    Returns:
        dict with the lists ``missing``, ``unexpected``, ``mismatched`` and the count ``matched``.
    """
    state = unwrap_state_dict(CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu'))
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in matched]
    unexpected = [k for k in state if k not in own]
    report = dict(matched=len(matched), missing=missing, unexpected=unexpected,
                  mismatched=mismatched)
    fraction = len(matched) / max(len(own), 1)
    if fraction < min_matched:
        example_ckpt = ', '.join(list(state)[:4]) or '(no tensors)'
        example_model = ', '.join(list(own)[:4])
        raise ValueError(
            f'Teacher checkpoint {checkpoint!r} fills only {len(matched)} of {len(own)} teacher '
            f'entries ({fraction:.0%} < min_matched {min_matched:.0%}): it does not belong to this '
            f'teacher model. Checkpoint keys look like [{example_ckpt}], the teacher expects '
            f'[{example_model}]. Check the teacher config, or set `teacher_prefix` if the weights '
            f'sit under a prefix. Mis-shaped: {mismatched[:5]}')
    model.load_state_dict(matched, strict=False)
    lines = [f'Loaded teacher checkpoint {checkpoint}: {len(matched)}/{len(own)} entries matched.']
    for name, keys in (('missing in checkpoint', missing), ('unexpected in checkpoint', unexpected),
                       ('wrong shape (not loaded)', mismatched)):
        if keys:
            lines.append(f'  {name} ({len(keys)}): {", ".join(keys[:10])}'
                         + (' ...' if len(keys) > 10 else ''))
    print_log('\n'.join(lines), logger=logger or 'current',
              level=30 if (missing or unexpected or mismatched) else 20)
    return report
