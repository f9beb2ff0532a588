"""Bundled study projects."""
