"""Sub-commands of the ``switchyard`` CLI, one module each."""
