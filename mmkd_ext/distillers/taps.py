"""Feature taps: read module outputs by module path with forward hooks (no backbone is edited).

A tap is a module path such as ``backbone.layers.0``, ``backbone.ln1``, ``neck`` or ``head``; its
value
is what that module returned on its first call in a forward pass (a tensor, or a tuple/list of
tensors), kept by reference: no copy is made. A module called several times in one forward (a head
shared over FPN levels) is tapped on its first call: tap its parent to get all of them.

Because values are references, an in-place op later in the forward (``ReLU(inplace=True)`` after a
BatchNorm) would silently change them; every tensor's version counter is recorded at capture and
:meth:`FeatureTaps.check_unchanged` raises when it moved.

Hooks are registered only while :meth:`FeatureTaps.record` runs, so a model carries no hooks between
passes and ``copy.deepcopy`` of a model (EMA) copies no hook that points back at the original.

Under ``torch.compile`` the hooks are traced into the graph of the forward they sit in (the compiler
guards on their code, not on their handles, so hooks registered anew at each pass reuse the graph).
Two things differ there: the early stop is not raised, as an exception cannot leave a graph (the
compiled pass returns only the tap values, so what the forward computes past its last tap is dead
code that the compiler drops), and no version is recorded, as a version read in a graph is the
tracer's, not the run's (the in-place check is the eager dry run's, at construction).
"""
import difflib
from contextlib import contextmanager
from typing import Dict, Iterable, List, Optional

import torch
import torch.nn as nn


class TapsComplete(BaseException):
    """Raised by a hook to stop a forward pass once every tap it needs has been read.

    A ``BaseException`` (like ``KeyboardInterrupt``), so that a model's own ``except Exception``
    cannot swallow the early stop and run on.
    """


def module_paths(model: nn.Module) -> List[str]:
    """All module paths of ``model`` (the root, '', excluded)."""
    return [name for name, _ in model.named_modules() if name]


def resolve_module(model: nn.Module, path: str, role: str = 'model') -> nn.Module:
    """Return the submodule at ``path`` or raise a KeyError that lists the closest existing
    paths."""
    modules = dict(model.named_modules())
    if path in modules and path:
        return modules[path]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(path, names, n=6, cutoff=0.5)
    # Also offer the children of the deepest existing prefix: 'backbone.layer.0' -> 'backbone.*'.
    parts = path.split('.')
    for i in range(len(parts) - 1, 0, -1):
        prefix = '.'.join(parts[:i])
        if prefix in modules:
            children = [f'{prefix}.{c}' for c, _ in modules[prefix].named_children()]
            close += [c for c in children if c not in close][:8]
            break
    if not close:
        close = [n for n in names if '.' not in n]
    raise KeyError(
        f'The {role} has no module at path {path!r}. Closest existing module paths: '
        f'{", ".join(close)}. Run `python tools/list_taps.py CONFIG` to list every path with '
        f'its output shape.')


def _tensors(value):
    """The tensors inside a tap value (a tensor, or nested tuples / lists / dicts of them)."""
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


class FeatureTaps:
    """Forward hooks on a set of module paths of one model.

    Args:
        model (nn.Module): the model to read from.
        paths (Iterable[str]): the module paths to tap; each is checked at construction.
        role (str): 'student' or 'teacher', used in error messages. Defaults to 'model'.

    Use::

        taps = FeatureTaps(model, ['backbone.layers.0', 'head'])
        with taps.record(stop_when_complete=True) as feats:
            model(inputs, mode='tensor')
        feats['backbone.layers.0']   # (B, N, D) for a ViT block
    """

    def __init__(self, model: nn.Module, paths: Iterable[str], role: str = 'model'):
        self.paths = list(dict.fromkeys(paths))
        self.role = role
        self.modules = {path: resolve_module(model, path, role) for path in self.paths}
        self._store: Optional[Dict[str, object]] = None
        self._versions: Dict[str, List[int]] = {}
        self._stop_when_complete = False

    def _make_hook(self, path: str):

        def hook(module, args, output):
            store = self._store
            if store is None or path in store:
                return
            store[path] = output
            if torch.compiler.is_compiling():
                return  # see the module docstring: no early stop, no versions in a graph
            self._versions[path] = [t._version for t in _tensors(output)]
            if self._stop_when_complete and len(store) == len(self.paths):
                raise TapsComplete

        return hook

    @contextmanager
    def record(self, stop_when_complete: bool = False):
        """Collect tap outputs into the yielded dict for the duration of the block.

        With ``stop_when_complete`` the forward pass is cut short (``TapsComplete`` is raised and
        swallowed here) as soon as every tap has its value: a teacher runs only as far as needed.
        """
        store: Dict[str, object] = {}
        self._store, self._stop_when_complete = store, stop_when_complete
        self._versions = {}
        handles = [m.register_forward_hook(self._make_hook(p)) for p, m in self.modules.items()]
        try:
            yield store
        except TapsComplete:
            pass
        finally:
            for h in handles:
                h.remove()
            self._store, self._stop_when_complete = None, False
        missing = [p for p in self.paths if p not in store]
        if missing:
            raise RuntimeError(
                f'The {self.role} forward pass never ran the tapped module(s) {missing}: they are '
                f'not on the path of this forward (e.g. a head not used in this mode). Tap modules '
                f'that the forward pass runs; `python tools/list_taps.py CONFIG` lists them.')

    def check_unchanged(self, store: Dict[str, object]) -> None:
        """Raise if a recorded tensor was modified in place after it was captured."""
        for path, versions in self._versions.items():
            now = [t._version for t in _tensors(store.get(path))]
            if now != versions:
                raise RuntimeError(
                    f'The {self.role} tap {path!r} was modified in place after it was read (e.g. a '
                    f'ReLU(inplace=True) right after it), so its value is not what {path!r} '
                    f'output. Tap the module that applies that in-place op instead (e.g. the '
                    f'activation after a norm layer), or build the model with inplace=False '
                    f'activations.')


def feature_shape(value):
    """Shape(s) of a tap value without the batch dimension: a tuple, or a list of them."""
    if hasattr(value, 'shape'):
        return tuple(value.shape[1:])
    if isinstance(value, (list, tuple)):
        return [feature_shape(v) for v in value]
    if isinstance(value, dict):
        return {k: feature_shape(v) for k, v in value.items()}
    if isinstance(value, (int, float)):
        return value  # e.g. the (h, w) patch grid that PatchEmbed returns beside its tokens
    return type(value).__name__
