"""Routes: items (placeholder until implemented)."""

from fastapi import APIRouter

router = APIRouter()
