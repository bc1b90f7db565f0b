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

import torch
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
