"""Observability adapters: OpenTelemetry traces, Prometheus metrics, JSON logs (ADR 0031)."""
