"""The cloud backend: a Llama-architecture decoder in torch served over the node protocol."""
