"""HTTP front door: Litestar, SSE and the AG-UI wire format."""
