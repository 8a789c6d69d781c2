"""Helpers for the hub tests: policies, segments, a port that never answers."""
