"""Warden: a self-hosted runtime that runs LLM agents in production."""

__version__ = "0.1.0"
