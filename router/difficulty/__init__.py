"""Learned difficulty classifier: P(the cloud model is needed) for a chat prompt."""
