"""Front doors (HTTP, worker, CLI) and the composition root."""
