"""In-process adapters: the embedded defaults and fast test doubles."""
