"""Shared fixtures for the end-to-end tests: a fresh in-memory store per test."""

from __future__ import annotations

import pytest

import durable


@pytest.fixture
def store() -> durable.MemoryStore:
    return durable.MemoryStore()
