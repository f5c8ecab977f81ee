"""The model registry's former name: the registry is :mod:`icp.models` (its ``__init__``, torch-free; one file per
model beside it). This module re-exports it for the modules that still import it by this name."""
from icp.models import (GENERATIVE, INCEPTION_FILE, INCEPTION_URL, MODELS, build_model, check_options,  # noqa: F401
                        is_generative, list_models, torch_hub_dir)
