"""Who may do what: the role of a person in an organization, or in the whole instance."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    ADMIN = "admin"  # connect, refresh, debug, manage keys and webhooks of the organization
    VIEWER = "viewer"  # read the organization's accounts, terminal and webhooks
    # An admin of their organization who also sees what belongs to the deployment, not to one
    # organization: workers (host, pid, versions), the shared eBay quota, running a cycle.
    OPERATOR = "operator"

    @property
    def manages(self) -> bool:
        """May change the organization's accounts, keys and webhooks."""
        return self in (Role.ADMIN, Role.OPERATOR)

    @property
    def sees_instance(self) -> bool:
        return self is Role.OPERATOR
