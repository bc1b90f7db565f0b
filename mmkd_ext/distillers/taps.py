"""Feature taps: read module outputs by module path with forward hooks (no backbone is edited).

A tap is a module path such as ``backbone.layers.0``, ``backbone.ln1``, ``neck`` or ``head``; its value
is what that module returned on its first call in a forward pass (a tensor, or a tuple/list of
tensors), kept by reference: no copy is made. A module called several times in one forward (a head
shared over FPN levels) is tapped on its first call: tap its parent to get all of them.
"""
import difflib
from contextlib import contextmanager
from typing import Dict, Iterable, List, Optional

import torch.nn as nn


class TapsComplete(Exception):
    """Raised by a hook to stop a forward pass once every tap it needs has been read."""


def module_paths(model: nn.Module) -> List[str]:
    """All module paths of ``model`` (the root, '', excluded)."""
    return [name for name, _ in model.named_modules() if name]


def resolve_module(model: nn.Module, path: str, role: str = 'model') -> nn.Module:
    """Return the submodule at ``path`` or raise a KeyError that lists the closest existing paths."""
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


class FeatureTaps:
    """Forward hooks on a set of module paths of one model.

    Args:
        model: the model to read from.
        paths: the module paths to tap.
        role: 'student' or 'teacher', used in error messages.

    Use::

        taps = FeatureTaps(model, ['backbone.layers.0', 'head'])
        with taps.record(stop_when_complete=True) as feats:
            model(inputs, mode='tensor')
        feats['backbone.layers.0']   # (B, N, D) for a ViT block
    """

    def __init__(self, model: nn.Module, paths: Iterable[str], role: str = 'model'):
        self.paths = list(dict.fromkeys(paths))
        self.role = role
        self._store: Optional[Dict[str, object]] = None
        self._stop_when_complete = False
        self._handles = []
        for path in self.paths:
            module = resolve_module(model, path, role)
            self._handles.append(module.register_forward_hook(self._make_hook(path)))

    def _make_hook(self, path: str):

        def hook(module, args, output):
            store = self._store
            if store is None or path in store:
                return
            store[path] = output
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
        try:
            yield store
        except TapsComplete:
            pass
        finally:
            self._store, self._stop_when_complete = None, False
        missing = [p for p in self.paths if p not in store]
        if missing:
            raise RuntimeError(
                f'The {self.role} forward pass never ran the tapped module(s) {missing}: they are '
                f'not on the path of this forward (e.g. a head not used in this mode). Tap modules '
                f'that the forward pass runs; `python tools/list_taps.py CONFIG` lists them.')

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []


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
