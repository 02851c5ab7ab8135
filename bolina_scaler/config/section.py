"""What every section of the configuration shares: the model base and the bound of replica counts.

Pure. A section is frozen (the daemon passes it around, never changes it), refuses unknown keys
(a typo is an error, not a default) and validates its defaults too.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["MAX_REPLICAS", "Section"]

MAX_REPLICAS = 150_000
"""Kubernetes' documented limit of pods per cluster ("Considerations for large clusters")."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
