"""The config's error type and hash, apart from lrdecay.config.validate (which re-exports both).

Job code (the toy model, result records) uses them without importing the validation and its
registries (models, datasets, resource requests), which such code has no use for. This module
imports nothing from lrdecay.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


class ConfigError(ValueError):
    """A config value is invalid; the message names the key, the value and what is allowed."""


def config_hash(section: Any) -> str:
    """Short stable hash of (part of) a config, recorded in result files for provenance."""
    blob = json.dumps(section, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
