from .checkpoint import install_loader, load_checkpoint_file
from .targets import as_logits, class_targets, drop_target_column

install_loader()

__all__ = ['load_checkpoint_file', 'as_logits', 'class_targets', 'drop_target_column']
