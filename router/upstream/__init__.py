"""Connections from the router to the model nodes it routes to."""
