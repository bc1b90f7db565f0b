"""Reading checkpoints: what a file may make ``torch.load`` build, and clear errors when it cannot.

MMEngine 0.10.7 calls ``torch.load`` without ``weights_only``; on torch >= 2.6 that means the
weights-only unpickler, which refuses a Runner checkpoint (its message hub holds ``HistoryBuffer``
objects and numpy values), while ``torch.hub`` (MMEngine's ``http(s)://`` loader) still unpickles
with full pickle. Importing mmkd_ext makes MMEngine's local and ``http(s)://`` loaders use
:func:`load_checkpoint_file` (URLs are first downloaded to ``<torch hub dir>/checkpoints``), with
this policy:

1. Every file is read by torch's weights-only unpickler. It builds tensors, containers and plain
   values, and calls or builds nothing outside an allow-list of exact names.
2. Beyond torch's own list, the allow-list holds exactly what MMEngine writes into a checkpoint,
   each under its full name (see :func:`allowed_globals`): numpy arrays, scalars and dtypes, and
   ``HistoryBuffer``. A ``HistoryBuffer`` is rebuilt by :class:`_HistoryBufferRebuilder`, which
   accepts only its data fields (``max_length``, ``_log_history``, ``_count_history``, and the
   four default statistics methods) and never calls ``HistoryBuffer.__setstate__`` (that one copies
   any key into the instance and into the class-wide statistics table). ``HistoryBuffer`` pickles
   its statistics methods as ``getattr(HistoryBuffer, 'mean')``; the name ``builtins.getattr``
   therefore means :func:`_history_buffer_statistic`, which returns those four functions and
   refuses everything else. There is no general attribute access.
3. A file that needs anything else is refused with a ``pickle.UnpicklingError`` that names it and
   writes nothing. ``MMKD_TRUST_CHECKPOINTS=1`` is the explicit opt-in to load such a file with
   full pickle: only for files you trust, since unpickling can run arbitrary code.
4. An empty, truncated or foreign file gets an error naming the file, its size and what to do,
   instead of a bare ``EOFError`` / ``RuntimeError``.

On torch < 2.5 (no allow-list API) step 2 is not possible: files are read with
``weights_only=True`` alone, and a Runner checkpoint needs ``MMKD_TRUST_CHECKPOINTS=1``.
"""
import importlib
import os
import os.path as osp
import pickle
import re
import threading
import zipfile
from typing import Callable, Dict, Optional, Sequence
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn as nn
from mmengine.dist import get_dist_info
from mmengine.logging import HistoryBuffer, MMLogger, print_log
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

TRUST_ENV = 'MMKD_TRUST_CHECKPOINTS'
# What a HistoryBuffer's pickled state may hold: mmengine 0.10.7's __getstate__ writes its
# __dict__ plus the class-wide table of statistics methods (by default these four functions).
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
_HISTORY_BUFFER_FIELDS = ('max_length', '_log_history', '_count_history')
# torch.serialization.safe_globals edits one process-wide set; loads in threads must not
# remove each other's entries half-way.
_LOAD_LOCK = threading.RLock()


def _refuse(reason: str):
    raise pickle.UnpicklingError(reason)


class _HistoryBufferRebuilder:
    """What the name ``mmengine.logging.history_buffer.HistoryBuffer`` unpickles to.

    The unpickler creates it empty (``NEWOBJ``) and hands it the pickled state (``BUILD``);
    :meth:`__setstate__` checks that state field by field and turns the object into a real
    ``HistoryBuffer`` holding exactly the three data fields. Once converted, the object is of a
    class the unpickler does not allow, so a second ``BUILD`` on it is refused by torch.
    """

    def __init__(self, *args, **kwargs):
        # Only reachable through REDUCE(HistoryBuffer, args), which MMEngine never writes.
        _refuse('HistoryBuffer(...) is called with arguments; a HistoryBuffer is only rebuilt '
                'from its pickled state')

    def __setstate__(self, state):
        if type(state) is not dict:
            _refuse(f'a HistoryBuffer state is a {type(state).__name__}, not a dict')
        known = set(_HISTORY_BUFFER_FIELDS) | {'statistics_methods'}
        unknown = sorted(map(repr, set(state) - known))
        missing = [k for k in _HISTORY_BUFFER_FIELDS if k not in state]
        if unknown or missing:
            problems = ([f'unknown fields [{", ".join(unknown)}]']
                        if unknown else []) + ([f'missing fields {missing}'] if missing else [])
            _refuse(f'a HistoryBuffer state has {" and ".join(problems)}; a HistoryBuffer holds '
                    f'exactly {list(_HISTORY_BUFFER_FIELDS)} and its statistics methods')
        if self.__dict__:
            _refuse('a HistoryBuffer state is given twice to one object')
        max_length = state['max_length']
        if type(max_length) is not int or max_length < 1:
            _refuse(f'HistoryBuffer max_length must be a positive int, got {max_length!r}')
        arrays = [state['_log_history'], state['_count_history']]
        for name, arr in zip(_HISTORY_BUFFER_FIELDS[1:], arrays):
            if (type(arr) is not np.ndarray or arr.ndim != 1 or arr.dtype.kind not in 'biuf'
                    or len(arr) > max_length):
                _refuse(f'HistoryBuffer {name} must be a 1-d numeric numpy array of at most '
                        f'max_length={max_length} values, got {type(arr).__name__} '
                        f'{getattr(arr, "shape", "")} {getattr(arr, "dtype", "")}')
        if len(arrays[0]) != len(arrays[1]):
            _refuse('HistoryBuffer _log_history and _count_history differ in length')
        methods = state.get('statistics_methods', {})
        if type(methods) is not dict or any(
                k not in _HISTORY_BUFFER_STATISTICS or v is not vars(HistoryBuffer)[k]
                for k, v in methods.items()):
            got = ({
                k: getattr(v, '__qualname__',
                           type(v).__name__)
                for k, v in methods.items()
            } if type(methods) is dict else type(methods).__name__)
            _refuse(f'HistoryBuffer statistics_methods may only map {_HISTORY_BUFFER_STATISTICS} '
                    f'to HistoryBuffer\'s own methods of those names, got {got}')
        self.__class__ = HistoryBuffer
        self.max_length = max_length
        self._log_history, self._count_history = arrays
        # What HistoryBuffer.__init__ does: setdefault of the four built-in methods, class-wide.
        self._set_default_statistics()


def _history_buffer_statistic(obj, name):
    """What the name ``builtins.getattr`` unpickles to: ``getattr(HistoryBuffer, name)`` for
    HistoryBuffer's four statistics methods, nothing else.

    Args:
        obj (object): Must be the class the pickle names as HistoryBuffer.
        name (str): One of ``'min'``, ``'max'``, ``'current'``, ``'mean'``.

    Returns:
        function: ``HistoryBuffer.<name>`` (a plain function; the unpickler never calls it).
    """
    if obj is _HistoryBufferRebuilder and type(name) is str and name in _HISTORY_BUFFER_STATISTICS:
        return vars(HistoryBuffer)[name]
    what = 'HistoryBuffer' if obj is _HistoryBufferRebuilder else (obj.__name__ if isinstance(
        obj, type) else f'a {type(obj).__module__}.{type(obj).__qualname__} object')
    _refuse(f'getattr({what}, {name!r}) is not allowed: the only attribute access a checkpoint '
            f'may ask for is getattr(HistoryBuffer, one of {_HISTORY_BUFFER_STATISTICS}), which is '
            f'how MMEngine pickles its statistics methods')


def _numpy_dtype(spec, align=False, copy=True):
    """What the name ``numpy.dtype`` unpickles to: ``np.dtype(spec, align, copy=True)`` for a type
    string such as ``'f8'``, as numpy pickles dtypes (always a new dtype, never the shared builtin
    instance, which the following ``BUILD`` would update)."""
    if type(spec) is not str or type(align) is not bool or type(copy) is not bool:
        _refuse(f'numpy.dtype{(spec, align, copy)!r} is not how numpy pickles a dtype '
                f'(numpy.dtype(<type string>, <bool>, <bool>))')
    return np.dtype(spec, align=align, copy=True)


def _numpy_multiarray():
    name = 'numpy._core.multiarray' if int(np.__version__.split('.')[0]) >= 2 else \
        'numpy.core.multiarray'
    return importlib.import_module(name)


def allowed_globals() -> Dict[str, Callable]:
    """The names a checkpoint may use beyond torch's own weights-only list, and what each means.

    Exact names only (numpy 1 writes ``numpy.core.*``, numpy 2 ``numpy._core.*``):

    - ``numpy.core.multiarray._reconstruct``, ``numpy._core.multiarray._reconstruct``: an empty
      ndarray (numpy refuses a type that is not an ndarray class); its data comes from
      ``ndarray.__setstate__``, which checks sizes.
    - ``numpy.core.multiarray.scalar``, ``numpy._core.multiarray.scalar``: a numpy scalar from a
      dtype and its bytes.
    - ``numpy.ndarray``: the array class (the type argument of ``_reconstruct``; arrays are
      ``BUILD`` targets). Called directly it only wraps a buffer, with bounds checks.
    - ``numpy.dtype``: :func:`_numpy_dtype`. The dtype classes (``numpy.dtypes.Float64DType``
      ...) of every built-in numpy type are listed as the classes that ``dtype.__setstate__`` is
      allowed to run on.
    - ``mmengine.logging.history_buffer.HistoryBuffer``: :class:`_HistoryBufferRebuilder`.
    - ``builtins.getattr``: :func:`_history_buffer_statistic`.

    Returns:
        dict[str, object]: Full name in the pickle -> the object it unpickles to.
    """
    multiarray = _numpy_multiarray()
    names = {
        'numpy.ndarray': np.ndarray,
        'numpy.dtype': _numpy_dtype,
        'mmengine.logging.history_buffer.HistoryBuffer': _HistoryBufferRebuilder,
        'builtins.getattr': _history_buffer_statistic,
    }
    for core in ('numpy.core', 'numpy._core'):
        names[f'{core}.multiarray._reconstruct'] = multiarray._reconstruct
        names[f'{core}.multiarray.scalar'] = multiarray.scalar
    for code in np.typecodes['All']:
        cls = type(np.dtype(code))
        names[f'{cls.__module__}.{cls.__qualname__}'] = cls
    return names


def _describe_size(filename: str) -> str:
    return f'{osp.getsize(filename)} bytes'


def _corrupt_error(filename: str, why: str) -> RuntimeError:
    return RuntimeError(
        f'Checkpoint {filename!r} ({_describe_size(filename)}) {why}. Download it again (delete '
        f'the file first if it sits in a download cache), or save it again from the model.')


def _torch_load(filename: str, head: bytes, **kwargs):
    """``torch.load`` whose errors for an unreadable file say so; refusals by the weights-only
    unpickler pass through as ``pickle.UnpicklingError``."""
    try:
        return torch.load(filename, **kwargs)
    except Exception as err:  # noqa: B902 (re-raised below unless it is a damaged file)
        if not head.startswith((b'PK', b'\x80')):
            raise _corrupt_error(
                filename, f'is not a file written by torch.save (it begins with {head!r}; a '
                f'failed download may have saved an error page instead)') from err
        text = str(err)
        damaged = isinstance(err, EOFError) or (isinstance(
            err, RuntimeError) and ('PytorchStreamReader' in text or 'unexpected EOF' in text)) or (
                isinstance(err, pickle.UnpicklingError) and 'pickle data was truncated' in text)
        if damaged:
            detail = type(err).__name__ + (f': {text.splitlines()[0]}' if text else '')
            raise _corrupt_error(filename, f'is truncated or corrupt ({detail})') from err
        raise


def _check_file(filename: str) -> bytes:
    """Errors for files that cannot hold a checkpoint; returns the first bytes."""
    if not osp.isfile(filename):
        raise FileNotFoundError(f'Checkpoint file {filename!r} does not exist.')
    if osp.getsize(filename) == 0:
        raise RuntimeError(
            f'Checkpoint {filename!r} is empty (0 bytes): whatever wrote it (a download, '
            f'torch.save) did not finish. Download it again (delete the file first if it sits in '
            f'a download cache), or save it again from the model.')
    with open(filename, 'rb') as f:
        head = f.read(8)
    # torch.save writes a zip whose directory is at the very end: a cut-off file has none.
    if head.startswith(b'PK') and not zipfile.is_zipfile(filename):
        raise _corrupt_error(
            filename, 'is truncated or corrupt: it starts like a torch.save zip '
            'archive but lacks the directory that closes one')
    return head


def _refusal_reason(filename: str, err: pickle.UnpicklingError) -> str:
    names = allowed_globals()
    try:
        unknown = sorted(
            g for g in torch.serialization.get_unsafe_globals_in_checkpoint(filename)
            if g not in names)
    except Exception:  # noqa: B902 (legacy, non-zip files: fall back to the unpickler's words)
        unknown = []
    # torch re-raises the unpickler's error (a refusal by a rebuilder above) as its context.
    inner = err.__context__ if isinstance(err.__context__, pickle.UnpicklingError) else err
    unknown = unknown or re.findall(r'GLOBAL (\S+) was not an allowed global', str(inner))
    if unknown:
        return f'it holds Python objects beyond tensors that are not known to be safe: {unknown}'
    return str(inner).splitlines()[0].rstrip('.')


def load_checkpoint_file(filename: str, map_location=None):
    """``torch.load`` of a local checkpoint with the policy of this module's docstring.

    Args:
        filename (str): Path of the file (``~`` is expanded).
        map_location (str | torch.device | Callable | dict, optional): As for ``torch.load``.
            Defaults to None.

    Returns:
        object: What the file holds, usually a dict.

    Raises:
        FileNotFoundError: There is no such file.
        RuntimeError: The file is empty, truncated, corrupt or not a torch.save file.
        pickle.UnpicklingError: The file needs objects the policy does not allow (and
            ``MMKD_TRUST_CHECKPOINTS`` is not ``1``).
    """
    filename = osp.expanduser(filename)
    head = _check_file(filename)
    trusted = os.environ.get(TRUST_ENV) == '1'
    try:
        if not hasattr(torch.serialization, 'safe_globals'):
            return _torch_load(filename, head, map_location=map_location, weights_only=True)
        allowed = [(obj, name) for name, obj in allowed_globals().items()]
        with _LOAD_LOCK, torch.serialization.safe_globals(allowed):
            return _torch_load(filename, head, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if trusted:
            return _torch_load(filename, head, map_location=map_location, weights_only=False)
        if not hasattr(torch.serialization, 'safe_globals'):
            reason = (f'torch {torch.__version__} has no allow-list API (torch >= 2.5 has), so '
                      f'only tensors can be loaded safely, and it holds more ({err})')
        else:
            reason = _refusal_reason(filename, err)
    raise pickle.UnpicklingError(
        f'Checkpoint {filename!r} was not loaded: {reason}. Loading objects beyond tensors and '
        f'what MMEngine writes could run code. If you trust this file, set {TRUST_ENV}=1 to load '
        f'it with full pickle, or re-save only its state_dict.')


def download_checkpoint(url: str, model_dir: Optional[str] = None, progress: bool = True) -> str:
    """Download ``url`` into the torch hub cache unless it is there already.

    Args:
        url (str): An ``http(s)://`` URL.
        model_dir (str, optional): Where to keep the file. Defaults to None:
            ``<torch.hub.get_dir()>/checkpoints``, as ``torch.hub.load_state_dict_from_url``.
        progress (bool): Show a progress bar. Defaults to True.

    Returns:
        str: Local path of the file, named as the last part of the URL's path.
    """
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, osp.basename(urlparse(url).path))
    if not osp.exists(cached):
        print_log(f'Downloading {url} to {cached}', logger='current')
        # Writes a temporary file and moves it into place when complete.
        torch.hub.download_url_to_file(url, cached, progress=progress)
    return cached


def load_from_local(filename: str, map_location=None):
    """MMEngine's loader for local paths (MMEngine logs the part after ``load_from_``):
    :func:`load_checkpoint_file`."""
    return load_checkpoint_file(filename, map_location=map_location)


def load_from_http(url: str,
                   map_location=None,
                   model_dir: Optional[str] = None,
                   progress: bool = os.isatty(0)):
    """MMEngine's loader for ``http(s)://``: :func:`download_checkpoint`, then
    :func:`load_checkpoint_file` (the policy of local files). With several processes, rank 0
    downloads first, as in MMEngine.

    Args:
        url (str): An ``http(s)://`` URL.
        map_location (str | torch.device | Callable | dict, optional): As for ``torch.load``.
            Defaults to None.
        model_dir (str, optional): See :func:`download_checkpoint`. Defaults to None.
        progress (bool): Show a progress bar. Defaults to whether stdin is a terminal.

    Returns:
        object: What the file holds.
    """
    rank, world_size = get_dist_info()
    if rank == 0:
        path = download_checkpoint(url, model_dir, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            path = download_checkpoint(url, model_dir, progress)
    return load_checkpoint_file(path, map_location=map_location)


def install_loader():
    """Make MMEngine read local files and ``http(s)://`` URLs with :func:`load_checkpoint_file`
    (:func:`load_from_local`, :func:`load_from_http`).

    ``torchvision://``, ``open-mmlab://`` and ``mmcls://`` resolve to URLs through MMEngine's
    module-level ``load_from_http``, which is replaced as well.
    """
    CheckpointLoader.register_scheme(prefixes='', force=True)(load_from_local)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), force=True)(load_from_http)
    mmengine_checkpoint.load_from_http = load_from_http


def unwrap_state_dict(ckpt, keys: Sequence[str] = ('state_dict', 'model', 'module')) -> dict:
    """A loaded checkpoint -> ``{name: tensor}``.

    Takes the first entry of ``keys`` that holds a dict (else the checkpoint itself), strips the
    ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes and drops non-tensors.

    Args:
        ckpt (dict): What :func:`load_checkpoint_file` returned.
        keys (Sequence[str]): Where the weights may sit, in order of preference.
            Defaults to ``('state_dict', 'model', 'module')``.

    Returns:
        dict[str, torch.Tensor]: The weights.
    """
    if not isinstance(ckpt, dict):
        raise TypeError(f'A checkpoint must hold a dict, got {type(ckpt).__name__}.')
    for key in keys:
        if key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    out = {}
    for k, v in ckpt.items():
        if not torch.is_tensor(v):
            continue
        while k.startswith(('module.', '_orig_mod.')):
            k = k.split('.', 1)[1]
        out[k] = v
    return out


def load_state_dict_with_report(model: nn.Module,
                                checkpoint: str,
                                min_matched: float = 0.5,
                                prefix: Optional[str] = None,
                                logger: Optional[MMLogger] = None) -> dict:
    """Load ``checkpoint`` into the teacher and report missing, unexpected and mis-shaped keys.

    Args:
        model (nn.Module): The teacher.
        checkpoint (str): A local path or URL (anything MMEngine's CheckpointLoader reads).
        min_matched (float): The fraction of the teacher's state-dict entries the checkpoint must
            fill; below it the teacher would be (almost) random, which is an error, not a
            warning. Defaults to 0.5.
        prefix (str, optional): Keep only keys under this prefix and strip it (e.g.
            ``'backbone.'``). Defaults to None.
        logger (MMLogger, optional): Where the report goes. Defaults to None (the current one).

    Returns:
        dict: The lists ``missing``, ``unexpected``, ``mismatched`` and the count ``matched``.
    """
    state = unwrap_state_dict(CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu'))
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    mismatched = [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in state.items() if k in own and own[k].shape != v.shape
    ]
    missing = [k for k in own if k not in matched]
    unexpected = [k for k in state if k not in own]
    report = dict(
        matched=len(matched), missing=missing, unexpected=unexpected, mismatched=mismatched)
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
            lines.append(f'  {name} ({len(keys)}): {", ".join(keys[:10])}' +
                         (' ...' if len(keys) > 10 else ''))
    print_log(
        '\n'.join(lines),
        logger=logger or 'current',
        level=30 if (missing or unexpected or mismatched) else 20)
    return report
