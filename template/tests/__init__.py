"""Tests of the service; they mirror src/."""
