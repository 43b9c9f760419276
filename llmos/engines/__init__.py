"""Engines execute models: generate, embed, classify and tag."""
