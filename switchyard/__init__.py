"""Switchyard: an edge-to-cloud hybrid request router for LLM chat."""

__version__ = "0.1.0"
