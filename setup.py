"""Install mmkd_ext: ``pip install -e .`` (tools/setup.sh installs the whole stack).

Like the OpenMMLab packages, the package carries its configs and tools under ``mmkd_ext/.mim``:
symbolic links to ``configs/``, ``tools/`` and ``model-index.yml`` for an editable install, copies
in a wheel or an sdist. That is what ``_base_ = ['mmkd_ext::vitkd/...']`` in a user's config and
``mim train mmkd_ext CONFIG`` read.
"""
import os
import os.path as osp
import shutil
import sys
import warnings
from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def read_version():
    scope = {}
    with open(osp.join(ROOT, 'mmkd_ext', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_readme():
    with open(osp.join(ROOT, 'README.md'), encoding='utf-8') as f:
        return f.read()


def read_requirements(name):
    """Requirement lines of requirements/<name>.txt (comments and blank lines dropped)."""
    with open(osp.join(ROOT, 'requirements', f'{name}.txt')) as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith('-')]


def add_mim_extension():
    """Put configs/, tools/ and model-index.yml into mmkd_ext/.mim.

    Editable installs (``develop``, or ``editable_wheel`` for PEP 660 as pip runs it today) get
    relative symbolic links, so edits in configs/ show at once; wheels and sdists get copies. Other
    setup commands (egg_info, dist_info) leave .mim as it is.
    """
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        mode = 'symlink'
    elif 'sdist' in sys.argv or 'bdist_wheel' in sys.argv:
        mode = 'copy'
    else:
        return
    mim_path = osp.join(ROOT, 'mmkd_ext', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src = osp.join(ROOT, name)
        dst = osp.join(mim_path, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            try:
                os.symlink(osp.relpath(src, mim_path), dst)
                continue
            except OSError:  # e.g. no privilege for links on Windows: copy instead
                warnings.warn(f'Could not link {dst} to {src}; copying it instead.')
        if osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='mmkd_ext',
        version=read_version(),
        description='Knowledge distillation for OpenMMLab (mmpretrain / mmdet / mmseg): ViTKD, '
        'SpectralKD and the logit (KD, hard KD, NKD, DKD) and feature (FitNet, MGD) baselines, '
        'from plain configs.',
        long_description=read_readme(),
        long_description_content_type='text/markdown',
        keywords='knowledge distillation, computer vision, openmmlab, vision transformer',
        author='mmkd_ext authors',
        license='Apache-2.0',
        license_files=['LICENSE'],
        classifiers=[
            'Development Status :: 3 - Alpha',
            'Operating System :: POSIX :: Linux',
            'Programming Language :: Python :: 3',
            'Programming Language :: Python :: 3.8',
            'Programming Language :: Python :: 3.9',
            'Programming Language :: Python :: 3.10',
            'Programming Language :: Python :: 3.11',
            'Topic :: Scientific/Engineering :: Artificial Intelligence',
        ],
        packages=find_packages(
            exclude=('configs', 'configs.*', 'tools', 'tools.*', 'tests', 'tests.*')),
        # The .mim tree (configs, tools, model-index.yml): see add_mim_extension and MANIFEST.in.
        include_package_data=True,
        python_requires='>=3.8',
        # mmcv (with ops) is needed by mmdet/mmseg and installed separately: see README.md.
        install_requires=[
            'torch>=2.1',
            'mmengine>=0.10.6',
            'mmpretrain>=1.2.0',
            'numpy',
        ],
        extras_require={
            'det': ['mmdet>=3.3.0'],
            'seg': ['mmsegmentation>=1.2.2', 'ftfy', 'regex'],
            'demo': ['scikit-learn', 'matplotlib'],
            'tests': read_requirements('tests'),
        },
        zip_safe=False)
