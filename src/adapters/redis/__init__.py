"""Redis adapters (Redis, Upstash, ElastiCache): rate limiter, concurrency guard, cache, run
event log and idempotency store, sharing one client and key scheme."""
