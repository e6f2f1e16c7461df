"""The router gateway: WebSocket and OpenAI-compatible chat in front of edge and cloud nodes."""
