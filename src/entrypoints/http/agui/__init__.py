"""AG-UI wire types and encoding. AG-UI types live only here; the core speaks its own events."""
