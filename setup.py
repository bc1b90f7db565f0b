"""Install mmkd_ext: ``pip install -e .`` (tools/setup.sh does the whole stack)."""
import os.path as osp

from setuptools import find_packages, setup


def read_version():
    scope = {}
    with open(osp.join(osp.dirname(__file__), 'mmkd_ext', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_readme():
    with open(osp.join(osp.dirname(__file__), 'README.md'), encoding='utf-8') as f:
        return f.read()


setup(
    name='mmkd_ext',
    version=read_version(),
    description='Knowledge distillation for OpenMMLab (mmpretrain / mmdet / mmseg): ViTKD, '
    'ScaleKD, SpectralKD, PAT and the logit/feature baselines, from plain configs.',
    long_description=read_readme(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
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
        'seg': ['mmsegmentation>=1.2.2'],
        'demo': ['scikit-learn', 'matplotlib'],
        'tests': ['pytest', 'scikit-learn', 'matplotlib'],
    },
    license='Apache License 2.0',
    zip_safe=False,
)
