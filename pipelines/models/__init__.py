"""Model versions and their stages (production, shadow, candidate, archived): see registry.py; the command line is
``python -m pipelines.models`` (__main__.py)."""

from pipelines.models.registry import (STAGES, Registry, RegistryError, ab_arm, feature_mismatch,  # noqa: F401
                                       production_version, read_state, registry_path)
