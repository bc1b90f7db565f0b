"""Print every module path of the student and the teacher with its output shape.

    python tools/list_taps.py CONFIG [--shape C H W]

Pick the paths to use as `student_taps` / `teacher_taps` of a distillation method.
"""
import argparse

import mmkd_ext  # noqa: F401
from mmkd_ext.apis.inspect_taps import list_taps


def main():
    parser = argparse.ArgumentParser(description='List tap-able module paths with shapes')
    parser.add_argument('config')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=3,
        metavar=('C', 'H', 'W'),
        help='input shape of the dummy batch (default: the distiller input_shape)')
    args = parser.parse_args()
    for role, rows in list_taps(args.config, args.shape).items():
        print(f'== {role} ==')
        width = max(len(r[0]) for r in rows)
        for path, kind, shape in rows:
            print(f'{path:<{width}}  {kind:<28} {shape}')


if __name__ == '__main__':
    main()
