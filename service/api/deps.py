"""Shared FastAPI dependencies (``Annotated`` aliases), as in the full-stack FastAPI template.

They are ``async def`` because they only read ``app.state``: FastAPI runs a plain ``def``
dependency in the thread pool, and a thread hop per dependency per request cost more than a
study read's queries (``bench/results/load_api_wrk.md``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.launch.runner import Runner
from service.store import Store


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_runner(request: Request) -> Runner:
    return request.app.state.runner


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


StoreDep = Annotated[Store, Depends(get_store)]
RunnerDep = Annotated[Runner, Depends(get_runner)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
