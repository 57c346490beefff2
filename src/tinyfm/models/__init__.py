"""Model registry and families."""

from tinyfm.models.registry import create_model, list_models, register_model
from tinyfm.models.serialize import load_model, save_model, unwrap

__all__ = ["create_model", "list_models", "register_model", "load_model", "save_model", "unwrap"]
