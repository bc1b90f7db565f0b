from .teacher_check_hook import (TeacherCheckError, TeacherCheckHook, evaluate_teacher,
                                 teacher_verdict)

__all__ = ['TeacherCheckError', 'TeacherCheckHook', 'evaluate_teacher', 'teacher_verdict']
