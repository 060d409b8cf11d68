"""Models chosen by name (timm-style): ``create_model(name, **kw)``; students via ``create_student``."""

from dfkd_edge.models.registry import create_model, list_models, register_model
from dfkd_edge.models import generators as _generators  # noqa: F401  (registers generator)
from dfkd_edge.models import teachers as _teachers  # noqa: F401  (registers digits_cnn)
from dfkd_edge.models import multihead as _multihead  # noqa: F401  (registers multihead)
from dfkd_edge.models.students import STUDENT_FAMILIES, auto_student, create_student

__all__ = ["create_model", "list_models", "register_model", "create_student", "auto_student",
           "STUDENT_FAMILIES"]
