from .augment_stream_hook import AugmentStreamHook
from .teacher_check_hook import (TeacherCheckError, TeacherCheckHook, evaluate_teacher,
                                 teacher_verdict)

__all__ = [
    'AugmentStreamHook', 'TeacherCheckError', 'TeacherCheckHook', 'evaluate_teacher',
    'teacher_verdict'
]
