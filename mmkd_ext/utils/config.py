"""Config resolution: ``package::path`` configs of installed OpenMMLab packages, model dicts, and
whole configs made ready to build models outside a Runner."""
import difflib
import hashlib
import importlib.util
import json
import os
import os.path as osp
from typing import Optional, Union

from mmengine.config import Config, ConfigDict

ModelSpec = Union[dict, str]


def config_digest(cfg) -> str:
    """A short, stable digest of a config (a ConfigDict, dict or any JSON-like value): what a
    fingerprint or a cache manifest records of it."""
    plain = cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def package_config_path(spec: str) -> str:
    """``mmpretrain::deit/deit-tiny_4xb256_in1k.py`` -> the file inside the installed package.

    MMEngine's own hub helper would ``pip install`` a missing package; we never do that silently.
    """
    package, rel = spec.split('::', 1)
    if importlib.util.find_spec(package) is None:
        raise ModuleNotFoundError(
            f'Config {spec!r} names the package {package!r}, which is not installed. Install it '
            f'(e.g. `pip install {package}`) or give a local config path or a model dict.')
    pkg_dir = osp.dirname(importlib.util.find_spec(package).origin)
    root = osp.join(pkg_dir, '.mim', 'configs')
    path = osp.join(root, rel)
    if not osp.isfile(path):
        known = []
        for dirpath, _, files in os.walk(root):
            known += [osp.relpath(osp.join(dirpath, f), root) for f in files if f.endswith('.py')]
        close = difflib.get_close_matches(rel, known, n=6, cutoff=0.4)
        raise FileNotFoundError(f'{package} has no config {rel!r} (looked in {root}). '
                                f'Closest: {", ".join(close) or "-"}')
    return path


def load_model_config(spec: ModelSpec) -> ConfigDict:
    """Return the model dict of ``spec`` with ``_scope_`` set when the source config names one."""
    if isinstance(spec, (dict, ConfigDict)):
        return ConfigDict(spec)
    if not isinstance(spec, str):
        raise TypeError(f'A model is a dict, a config path or "package::path", got {type(spec)}')
    path = package_config_path(spec) if '::' in spec else spec
    if not osp.isfile(path):
        raise FileNotFoundError(f'Model config file {path!r} does not exist.')
    cfg = Config.fromfile(path)
    if 'model' not in cfg:
        raise KeyError(f'Config {spec!r} has no `model` entry.')
    model = ConfigDict(cfg.model)
    # The Runner gives a top-level `data_preprocessor` to the model; do the same here, or a model
    # loaded from an mmpretrain config would lose its normalisation.
    if cfg.get('data_preprocessor') is not None and 'data_preprocessor' not in model:
        model['data_preprocessor'] = cfg.data_preprocessor
    if cfg.get('default_scope') and '_scope_' not in model:
        model['_scope_'] = cfg.default_scope
    return model


def load_config(config: Union[str, Config],
                cfg_options: Optional[dict] = None,
                activate: bool = False) -> Config:
    """A config from a path, ``package::path`` or a Config, with ``cfg_options`` merged.

    With ``activate`` its ``custom_imports`` are imported and its ``default_scope`` (mmpretrain if
    none) is made current, so that its models can be built outside a Runner (the analysis tools).
    """
    if isinstance(config, str):
        cfg = Config.fromfile(package_config_path(config) if '::' in config else config)
    else:
        cfg = config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if activate:
        from mmengine.registry import init_default_scope
        from mmengine.utils import import_modules_from_strings
        if cfg.get('custom_imports'):
            import_modules_from_strings(**cfg.custom_imports)
        init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    return cfg


def register_config_package() -> None:
    """Let MMEngine's ``Config`` read ``mmkd_ext::FOLDER/CONFIG.py`` (e.g. in a user's ``_base_``).

    MMEngine 0.10 reads ``package::path`` only for packages in its ``MODULE2PACKAGE`` table and
    locates them through pkg_resources, which for an editable (PEP 660) install answers
    site-packages, where mmkd_ext is not. The module ``mmkd_ext.version`` is no distribution's name,
    so MMEngine finds it with importlib: its directory is the package's own, the one holding
    ``.mim/configs``. Nothing is installed on the way.
    """
    from mmengine.config.utils import MODULE2PACKAGE
    MODULE2PACKAGE.setdefault('mmkd_ext', 'mmkd_ext.version')
