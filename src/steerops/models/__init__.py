"""Model loading and the one architecture resolver every stage uses."""

from steerops.models.loading import LoadedModel, format_prompt, load_model
from steerops.models.resolver import ModelLayout, resolve_layout

__all__ = ["LoadedModel", "ModelLayout", "format_prompt", "load_model", "resolve_layout"]
