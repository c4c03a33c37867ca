"""All gateway routes, one router per resource."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.routes import chat, health, models, route, ui, usage

api_router = APIRouter()
for module in (health, route, chat, models, usage, ui):
    api_router.include_router(module.router)
