"""Export the student of a distillation checkpoint as a plain checkpoint.

    python tools/export_student.py work_dirs/X/epoch_300.pth student.pth [--prefix backbone.]

Then fine-tune downstream as with any pretrained model, e.g. in an mmdet / mmseg config:
    backbone=dict(..., init_cfg=dict(type='Pretrained', checkpoint='student.pth',
                                     prefix='backbone.'))
"""
import argparse
import pickle

from mmkd_ext.apis.export import export_student


def main():
    parser = argparse.ArgumentParser(description='Export the distilled student')
    parser.add_argument('src', help='distillation checkpoint (from tools/train.py)')
    parser.add_argument('dst', help='output student checkpoint')
    parser.add_argument('--prefix', help="keep only keys under this prefix, e.g. 'backbone.'")
    args = parser.parse_args()
    try:
        out = export_student(args.src, args.dst, args.prefix)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
        # These messages say what is wrong with SRC and what to do; a traceback adds nothing.
        parser.exit(1, f'export_student.py: error: {err}\n')
    n = sum(v.numel() for v in out['state_dict'].values())
    print(f'Saved {len(out["state_dict"])} student tensors ({n / 1e6:.2f} M values) to {args.dst}')


if __name__ == '__main__':
    main()
