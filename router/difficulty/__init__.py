"""Learned difficulty classifier: how much a chat prompt needs the cloud model, in [0, 1]."""
