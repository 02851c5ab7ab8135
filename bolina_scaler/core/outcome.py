"""What the daemon did with a decision: one value, spelled the same everywhere it shows.

Pure data. ``/v1/decision`` (``outcome``), the ``bolina_scaler_patches_total{outcome}`` metric,
the evaluation's log line and the Kubernetes Event all use these strings, so a person reading
one of them can search the others for the same word.
"""

from __future__ import annotations

import enum

__all__ = ["Outcome"]


class Outcome(enum.StrEnum):
    PATCHED = "patched"
    """The scale was changed as decided."""
    UNCHANGED = "unchanged"
    """The decision keeps the current scale: nothing to send."""
    DRY_RUN = "dry_run"
    """A change was decided and not sent: ``dry_run``."""
    NOT_LEADER = "not_leader"
    """A change was decided by a replica that does not hold the Lease: not sent."""
    CONFLICT = "conflict"
    """The patch met a newer resourceVersion (409): the scale is re-read and decided again."""
    FAILED = "failed"
    """The patch was refused or could not be sent (RBAC, API server unavailable, …)."""

    @property
    def sent(self) -> bool:
        """Whether a patch request went to the API server."""
        return self in {Outcome.PATCHED, Outcome.CONFLICT, Outcome.FAILED}
