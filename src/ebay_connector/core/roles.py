"""Who may do what: the role of a person in an organization."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    ADMIN = "admin"  # connect, refresh, debug, manage keys
    VIEWER = "viewer"  # read
