"""Greenlight: human-in-the-loop approvals for LLM agents."""
