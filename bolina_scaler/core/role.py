"""What this replica is: leader, follower or shadow. One word, decided in one place.

Pure data. The daemon works its role out once per question (``Role.of``) from the two facts
that decide it: whether it runs as a dry-run shadow, and whether it leads (always, without
leader election). Everything that acts or explains asks the role: the evaluator (may it patch,
may it record an Event), the log line and ``/v1/decision`` (its word), and the
``bolina_scaler_leader`` gauge.
"""

from __future__ import annotations

import enum

__all__ = ["Role"]


class Role(enum.StrEnum):
    LEADER = "leader"
    """Patches, annotates pods and records Events (every replica, without leader election)."""
    FOLLOWER = "follower"
    """Watches, decides and explains ("follower: would ..."); sends nothing to Kubernetes."""
    SHADOW = "shadow"
    """Dry run: decides and explains beside the real scaler; never patches, never joins the election."""

    @classmethod
    def of(cls, *, shadow: bool, leading: bool) -> Role:
        """The role of a replica that is a shadow (dry run) or not, and leads or not."""
        if shadow:
            return cls.SHADOW
        return cls.LEADER if leading else cls.FOLLOWER

    @property
    def may_patch(self) -> bool:
        """Whether this replica may change the Deployment (its scale, its pods' deletion costs)."""
        return self is Role.LEADER

    @property
    def may_record(self) -> bool:
        """Whether this replica records Kubernetes Events: only the leader, so each is recorded once."""
        return self is Role.LEADER
