from .checkpoint import install_loader, load_checkpoint_file
from .config import register_config_package
from .targets import as_logits, class_targets, drop_target_column

# Importing mmkd_ext installs the checkpoint loading policy and makes `mmkd_ext::` configs readable.
install_loader()
register_config_package()

__all__ = ['load_checkpoint_file', 'as_logits', 'class_targets', 'drop_target_column']
