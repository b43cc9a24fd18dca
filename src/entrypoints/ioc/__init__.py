"""The composition root: the only place that knows concrete adapters."""
