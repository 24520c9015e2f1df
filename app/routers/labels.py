"""Routes: labels (placeholder until implemented)."""

from fastapi import APIRouter

router = APIRouter()
