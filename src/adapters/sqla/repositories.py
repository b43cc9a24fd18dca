"""Repositories over one SQLAlchemy connection in one scope. Every statement on tenant-owned rows
filters by the tenant the caller names, and the caller may only name the transaction's own
tenant (``check_tenant``); on Postgres, row-level security checks it a second time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select, text, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.scope import AdminScope, KeyScope, Scope, TenantScope, check_key, check_tenant
from adapters.sqla.tables import admin_log, api_keys, messages, runs, tenants, threads
from domain.conversation.model import Message, Role, Run, RunStatus, Thread, ToolCall, Usage
from domain.ids import ApiKeyId, MessageId, RunId, TenantId, ThreadId
from domain.tenancy.model import (
    AdminLogEntry,
    ApiKey,
    Tenant,
    TenantProfile,
    TenantStatus,
    parse_scopes,
    scopes_text,
)
from domain.tenancy.model import Role as KeyRole


def encode_tool_calls(calls: Sequence[ToolCall]) -> str | None:
    if not calls:
        return None
    return json.dumps([{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls])


def decode_tool_calls(raw: str | None) -> tuple[ToolCall, ...]:
    if not raw:
        return ()
    return tuple(
        ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"]) for c in json.loads(raw)
    )


class SqlaThreadRepository:
    def __init__(self, conn: AsyncConnection, scope: Scope) -> None:
        self._conn = conn
        self._scope = scope

    async def get(self, tenant_id: TenantId, thread_id: ThreadId) -> Thread | None:
        check_tenant(self._scope, tenant_id)
        row = (
            await self._conn.execute(
                select(threads.c.created_at_ms).where(
                    threads.c.tenant_id == tenant_id, threads.c.id == thread_id
                )
            )
        ).first()
        if row is None:
            return None
        return Thread(id=thread_id, tenant_id=tenant_id, created_at_ms=row.created_at_ms)

    async def add(self, thread: Thread) -> None:
        check_tenant(self._scope, thread.tenant_id)
        await self._conn.execute(
            insert(threads).values(
                tenant_id=thread.tenant_id, id=thread.id, created_at_ms=thread.created_at_ms
            )
        )

    async def add_messages(
        self, tenant_id: TenantId, thread_id: ThreadId, items: Sequence[Message]
    ) -> int:
        check_tenant(self._scope, tenant_id)
        if not items:
            return 0
        where = (messages.c.tenant_id == tenant_id, messages.c.thread_id == thread_id)
        existing = {
            row.id
            for row in await self._conn.execute(
                select(messages.c.id).where(*where, messages.c.id.in_({m.id for m in items}))
            )
        }
        fresh: list[dict[str, Any]] = []
        seen = set(existing)
        for m in items:
            if m.id not in seen:
                seen.add(m.id)
                fresh.append(
                    {
                        "tenant_id": tenant_id,
                        "thread_id": thread_id,
                        "id": m.id,
                        "role": m.role.value,
                        "content": m.content,
                        "created_at_ms": m.created_at_ms,
                        "tool_calls": encode_tool_calls(m.tool_calls),
                        "tool_call_id": m.tool_call_id,
                    }
                )
        if not fresh:
            return 0
        top = (
            await self._conn.execute(select(func.max(messages.c.position)).where(*where))
        ).scalar()
        start = 0 if top is None else top + 1
        for offset, row in enumerate(fresh):
            row["position"] = start + offset
        await self._conn.execute(insert(messages), fresh)
        return len(fresh)

    async def list_messages(
        self,
        tenant_id: TenantId,
        thread_id: ThreadId,
        *,
        start: int = 0,
        limit: int | None = None,
    ) -> list[Message]:
        check_tenant(self._scope, tenant_id)
        query = (
            select(
                messages.c.id,
                messages.c.role,
                messages.c.content,
                messages.c.created_at_ms,
                messages.c.tool_calls,
                messages.c.tool_call_id,
            )
            .where(messages.c.tenant_id == tenant_id, messages.c.thread_id == thread_id)
            .order_by(messages.c.position)
        )
        if start:
            # Positions run from 0 without gaps: the start-th message holds position start.
            query = query.where(messages.c.position >= start)
        if limit is not None:
            query = query.limit(limit)
        rows = await self._conn.execute(query)
        return [
            Message(
                id=MessageId(r.id),
                role=Role(r.role),
                content=r.content,
                created_at_ms=r.created_at_ms,
                tool_calls=decode_tool_calls(r.tool_calls),
                tool_call_id=r.tool_call_id,
            )
            for r in rows
        ]


def _run_values(run: Run) -> dict[str, Any]:
    return {
        "status": run.status.value,
        "input_tokens": run.usage.input_tokens,
        "output_tokens": run.usage.output_tokens,
        "error_code": run.error_code,
        "error_message": run.error_message,
        "finished_at_ms": run.finished_at_ms,
        "model": run.model,
    }


class SqlaRunRepository:
    def __init__(self, conn: AsyncConnection, scope: Scope) -> None:
        self._conn = conn
        self._scope = scope

    async def get(self, tenant_id: TenantId, run_id: RunId) -> Run | None:
        check_tenant(self._scope, tenant_id)
        r = (
            await self._conn.execute(
                select(runs).where(runs.c.tenant_id == tenant_id, runs.c.id == run_id)
            )
        ).first()
        return None if r is None else _run(r)

    async def unfinished(self, tenant_id: TenantId, *, limit: int) -> list[Run]:
        check_tenant(self._scope, tenant_id)
        rows = await self._conn.execute(
            select(runs)
            .where(runs.c.tenant_id == tenant_id, runs.c.status.in_(("pending", "running")))
            .order_by(runs.c.created_at_ms, runs.c.id)
            .limit(limit)
        )
        return [_run(r) for r in rows]

    async def add(self, run: Run) -> None:
        check_tenant(self._scope, run.tenant_id)
        await self._conn.execute(
            insert(runs).values(
                tenant_id=run.tenant_id,
                id=run.id,
                thread_id=run.thread_id,
                agent=run.agent,
                created_at_ms=run.created_at_ms,
                **_run_values(run),
            )
        )

    async def save(self, run: Run) -> None:
        check_tenant(self._scope, run.tenant_id)
        await self._conn.execute(
            update(runs)
            .where(runs.c.tenant_id == run.tenant_id, runs.c.id == run.id)
            .values(**_run_values(run))
        )


def _run(r: Any) -> Run:
    return Run(
        id=RunId(r.id),
        tenant_id=TenantId(r.tenant_id),
        thread_id=ThreadId(r.thread_id),
        agent=r.agent,
        created_at_ms=r.created_at_ms,
        status=RunStatus(r.status),
        usage=Usage(input_tokens=r.input_tokens, output_tokens=r.output_tokens),
        error_code=r.error_code,
        error_message=r.error_message,
        finished_at_ms=r.finished_at_ms,
        model=r.model,
    )


def _tenant(r: Any) -> Tenant:
    return Tenant(
        id=TenantId(r.id),
        slug=r.slug,
        name=r.name,
        created_at_ms=r.created_at_ms,
        status=TenantStatus(r.status),
        kb_language=r.kb_language,
        profile=_profile(r),
    )


def _tenant_filter(scope: Scope) -> ColumnElement[bool]:
    """The tenants a scope may see: its own, the one owning the key being looked up, or all."""
    if isinstance(scope, TenantScope):
        return tenants.c.id == scope.tenant_id
    if isinstance(scope, KeyScope):
        return tenants.c.id.in_(
            select(api_keys.c.tenant_id).where(api_keys.c.prefix == scope.prefix)
        )
    return true()


def _names(names: frozenset[str] | None) -> str | None:
    return None if names is None else " ".join(sorted(names))


def _profile_columns(profile: TenantProfile) -> dict[str, str | None]:
    return {
        "plan": profile.plan,
        "allowed_tools": _names(profile.tools),
        "allowed_models": _names(profile.models),
    }


def _profile(r: Any) -> TenantProfile:
    return TenantProfile(
        plan=r.plan,
        tools=None if r.allowed_tools is None else frozenset(r.allowed_tools.split()),
        models=None if r.allowed_models is None else frozenset(r.allowed_models.split()),
    )


class SqlaTenantRepository:
    def __init__(self, conn: AsyncConnection, scope: Scope) -> None:
        self._conn = conn
        self._scope = scope

    async def get(self, tenant_id: TenantId) -> Tenant | None:
        if isinstance(self._scope, TenantScope):
            check_tenant(self._scope, tenant_id)
        r = (
            await self._conn.execute(
                select(tenants).where(tenants.c.id == tenant_id, _tenant_filter(self._scope))
            )
        ).first()
        return None if r is None else _tenant(r)

    async def get_by_slug(self, slug: str) -> Tenant | None:
        r = (
            await self._conn.execute(
                select(tenants).where(tenants.c.slug == slug, _tenant_filter(self._scope))
            )
        ).first()
        return None if r is None else _tenant(r)

    async def add(self, tenant: Tenant) -> None:
        check_tenant(self._scope, tenant.id)
        await self._conn.execute(
            insert(tenants).values(
                id=tenant.id,
                slug=tenant.slug,
                name=tenant.name,
                status=tenant.status.value,
                created_at_ms=tenant.created_at_ms,
                kb_language=tenant.kb_language,
                **_profile_columns(tenant.profile),
            )
        )

    async def list(self, *, after: str | None = None, limit: int | None = None) -> list[Tenant]:
        query = select(tenants).where(_tenant_filter(self._scope)).order_by(tenants.c.slug)
        if after is not None:
            query = query.where(tenants.c.slug > after)
        if limit is not None:
            query = query.limit(limit)
        return [_tenant(r) for r in await self._conn.execute(query)]

    async def set_status(self, tenant_id: TenantId, status: TenantStatus) -> bool:
        check_tenant(self._scope, tenant_id)
        result = await self._conn.execute(
            update(tenants).where(tenants.c.id == tenant_id).values(status=status.value)
        )
        return bool(result.rowcount)

    async def set_profile(self, tenant_id: TenantId, profile: TenantProfile) -> bool:
        check_tenant(self._scope, tenant_id)
        result = await self._conn.execute(
            update(tenants).where(tenants.c.id == tenant_id).values(**_profile_columns(profile))
        )
        return bool(result.rowcount)

    async def delete(self, tenant_id: TenantId) -> bool:
        check_tenant(self._scope, tenant_id)
        if self._conn.dialect.name == "sqlite":
            # The full-text index is a virtual table outside the foreign keys' cascade.
            await self._conn.execute(
                text("DELETE FROM kb_chunks_fts WHERE tenant_id = :t"), {"t": tenant_id}
            )
        result = await self._conn.execute(delete(tenants).where(tenants.c.id == tenant_id))
        return bool(result.rowcount)


class SqlaApiKeyRepository:
    def __init__(self, conn: AsyncConnection, scope: Scope) -> None:
        self._conn = conn
        self._scope = scope

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        check_key(self._scope, prefix)
        query = select(api_keys).where(api_keys.c.prefix == prefix)
        if isinstance(self._scope, TenantScope):
            query = query.where(api_keys.c.tenant_id == self._scope.tenant_id)
        r = (await self._conn.execute(query)).first()
        return None if r is None else _api_key(r)

    async def list_for(self, tenant_id: TenantId) -> list[ApiKey]:
        check_tenant(self._scope, tenant_id)
        rows = await self._conn.execute(
            select(api_keys)
            .where(api_keys.c.tenant_id == tenant_id)
            .order_by(api_keys.c.created_at_ms, api_keys.c.id)
        )
        return [_api_key(r) for r in rows]

    async def revoke(self, tenant_id: TenantId, key_id: str) -> bool:
        check_tenant(self._scope, tenant_id)
        result = await self._conn.execute(
            update(api_keys)
            .where(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
            .values(revoked=True)
        )
        return bool(result.rowcount)

    async def touch(self, tenant_id: TenantId, key_id: str, at_ms: int) -> None:
        check_tenant(self._scope, tenant_id)
        await self._conn.execute(
            update(api_keys)
            .where(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
            .values(last_used_at_ms=at_ms)
        )

    async def add(self, key: ApiKey) -> None:
        check_tenant(self._scope, key.tenant_id)
        await self._conn.execute(
            insert(api_keys).values(
                id=key.id,
                tenant_id=key.tenant_id,
                prefix=key.prefix,
                secret_digest=key.secret_digest,
                role=key.role.value,
                revoked=key.revoked,
                created_at_ms=key.created_at_ms,
                expires_at_ms=key.expires_at_ms,
                last_used_at_ms=key.last_used_at_ms,
                scopes=scopes_text(key.scopes),
            )
        )


def _api_key(r: Any) -> ApiKey:
    return ApiKey(
        id=ApiKeyId(r.id),
        tenant_id=TenantId(r.tenant_id),
        prefix=r.prefix,
        secret_digest=r.secret_digest,
        role=KeyRole(r.role),
        created_at_ms=r.created_at_ms,
        revoked=r.revoked,
        expires_at_ms=r.expires_at_ms,
        last_used_at_ms=r.last_used_at_ms,
        scopes=parse_scopes(r.scopes.split()) if r.scopes is not None else None,
    )


class SqlaAdminLog:
    def __init__(self, conn: AsyncConnection, scope: AdminScope) -> None:
        self._conn = conn

    async def recent(self, limit: int) -> list[AdminLogEntry]:
        rows = await self._conn.execute(
            select(admin_log.c.at_ms, admin_log.c.actor, admin_log.c.action)
            .order_by(admin_log.c.id.desc())
            .limit(limit)
        )
        return [AdminLogEntry(at_ms=r.at_ms, actor=r.actor, action=r.action) for r in rows]
