"""Backends the service talks to, each opened in the lifespan and closed on shutdown."""
