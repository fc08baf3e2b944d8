"""Triggers: committed database changes become XML documents on a chain stream, and back."""
