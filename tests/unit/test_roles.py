"""Who may change whose role: nobody locks an organization out of its own management."""

from __future__ import annotations

import pytest

from ebay_connector.core.roles import Role, refusal

pytestmark = pytest.mark.unit

A, V, OP = Role.ADMIN, Role.VIEWER, Role.OPERATOR


@pytest.mark.parametrize(
    ("by", "by_self", "current", "new", "managers", "says"),
    [
        (A, False, V, A, 1, None),
        (A, False, A, V, 2, None),
        (A, False, V, None, 1, None),
        (OP, False, V, OP, 1, None),
        (OP, False, OP, A, 2, None),
        (V, False, V, A, 1, "only an admin"),
        (A, True, A, None, 2, "cannot remove yourself"),
        (A, True, A, V, 3, "your own admin role"),
        (A, True, A, A, 1, None),
        (A, False, A, V, 1, "last admin"),
        (A, False, A, None, 1, "last admin"),
        (OP, False, OP, None, 1, "last admin"),
        (A, False, V, OP, 1, "only an operator"),
        (A, False, OP, V, 3, "only an operator"),
        (A, False, OP, None, 3, "only an operator"),
    ],
)
def test_refusal(
    by: Role, by_self: bool, current: Role, new: Role | None, managers: int, says: str | None
) -> None:
    why = refusal(by=by, by_self=by_self, current=current, new=new, managers=managers)
    assert (why is None) if says is None else (why is not None and says in why), why
