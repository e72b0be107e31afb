"""genloom serve: an OpenAI-compatible HTTP API (protocol / engine / routes / app) and its storage."""
