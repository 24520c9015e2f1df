"""API keys: generated once, shown once, stored as a sha256 hash (they are random, so no salt is needed)."""

from __future__ import annotations

import hashlib
import secrets

ROLE_ADMIN = "admin"
ROLE_ANNOTATOR = "annotator"
ROLES = (ROLE_ADMIN, ROLE_ANNOTATOR)

KEY_PREFIX = "svp_"


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
