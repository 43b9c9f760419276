"""The HTTP API: OpenAI-compatible routes, task routes and admin routes."""
