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


def refusal(
    *, by: Role, by_self: bool, current: Role, new: Role | None, managers: int
) -> str | None:
    """Why a person of role ``by`` may not give a member of role ``current`` the role ``new``
    (``None``: remove them) in an organization that has ``managers`` admins and operators; None
    when they may. Nobody locks the organization out of its own management, and the operator
    role (the whole deployment's) is granted and taken by operators only."""
    if not by.manages:
        return "only an admin can change the people of an organization"
    if Role.OPERATOR in (current, new) and by is not Role.OPERATOR and current != new:
        return "only an operator can grant or take the operator role"
    if by_self and new is None:
        return "you cannot remove yourself; ask another admin"
    if by_self and new is not None and not new.manages:
        return "you cannot take away your own admin role; ask another admin"
    losing = current.manages and (new is None or not new.manages)
    if losing and managers <= 1:
        return "the organization's last admin cannot be removed or made a viewer"
    return None
