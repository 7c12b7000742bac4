"""Workflow templates: ComfyUI API-format graphs with typed manifests, binding and validation, the GPU lock.

Import from here (``from reelforge.templates import load_template``).
"""

from reelforge.templates.assignments import parse_assignments
from reelforge.templates.catalogue import Catalogue, offline_catalogue
from reelforge.templates.errors import InitRefused, Problem, TemplateError
from reelforge.templates.lock import ComfyLock, LockError, default_lock, load_lock
from reelforge.templates.scaffold import InitResult, init_template
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
    "InitRefused",
    "InitResult",
    "LockError",
    "Problem",
    "Template",
    "TemplateError",
    "TemplateOutput",
    "check_against_lock",
    "default_lock",
    "init_template",
    "load_all",
    "load_lock",
    "load_template",
    "offline_catalogue",
    "parse_assignments",
    "template_names",
    "validate_on_worker",
]
