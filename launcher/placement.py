"""Placeholder until the binding policies land: the bind group's schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class BindSpec:
    policy: str = "none"
    cores: Any = None
