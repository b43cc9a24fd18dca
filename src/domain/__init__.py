"""Pure business rules: stdlib only, synchronous, no I/O."""
