"""Workflow templates: ComfyUI API-format graphs with typed manifests, binding and validation, the GPU lock.

Import from here (``from reelforge.templates import load_template``).
"""

from reelforge.templates.catalogue import Catalogue, offline_catalogue
from reelforge.templates.errors import Problem, TemplateError
from reelforge.templates.lock import ComfyLock, LockError, default_lock, load_lock
from reelforge.templates.template import (
    Template,
    TemplateOutput,
    check_against_lock,
    load_all,
    load_template,
    template_names,
    validate_on_worker,
)

__all__ = [
    "Catalogue",
    "ComfyLock",
    "LockError",
    "Problem",
    "Template",
    "TemplateError",
    "TemplateOutput",
    "check_against_lock",
    "default_lock",
    "load_all",
    "load_lock",
    "load_template",
    "offline_catalogue",
    "template_names",
    "validate_on_worker",
]
