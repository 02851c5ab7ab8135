"""What every section of the configuration shares: the model base and the bound of replica counts.

Pure. A section is frozen (the daemon passes it around, never changes it), refuses unknown keys
(a typo is an error, not a default), validates its defaults too, and takes no value of another
type for its own (``true`` is not 1, ``"20"`` not 20).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["MAX_REPLICAS", "Section"]

MAX_REPLICAS = 150_000
"""Kubernetes' documented limit of pods per cluster ("Considerations for large clusters")."""


class Section(BaseModel):
    """Every section: unknown keys refused, frozen, and strict types.

    Strict: YAML already gives each value its type, so a value of the wrong type is a mistake to
    name, not one to convert. Lax pydantic read ``min_replicas: true`` as 1, ``max_replicas: "20"``
    as 20, ``max_step: 4.0`` as 4 and ``target_available_ratio: true`` as 1.0; strict refuses each
    (an integer where a number is asked is fine). Durations parse their own strings (``checks``);
    paths are written as strings, so their fields are not strict.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, strict=True)
