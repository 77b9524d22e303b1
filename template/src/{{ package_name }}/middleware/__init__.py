"""Pure ASGI middleware: each wraps send instead of buffering the response."""
