"""Providers of the workspace resources people manage beside runs: threads and tasks."""

from __future__ import annotations

from dishka import Provider, Scope, provide

from adapters.sqla.scope import Database
from adapters.sqla.threads import SqlaThreadCatalog
from application.conversation.threads import (
    DeleteThread,
    GetThread,
    ListThreads,
    RenameThread,
    ThreadCatalog,
)
from application.tools.tasks import DeleteTask, GetTask, ListTasks, UpdateTask


class WorkspaceProvider(Provider):
    scope = Scope.APP

    @provide
    def thread_catalog(self, db: Database) -> ThreadCatalog:
        return SqlaThreadCatalog(db)

    list_threads = provide(ListThreads)
    get_thread = provide(GetThread)
    rename_thread = provide(RenameThread)
    delete_thread = provide(DeleteThread)
    list_tasks = provide(ListTasks)
    get_task = provide(GetTask)
    update_task = provide(UpdateTask)
    delete_task = provide(DeleteTask)
