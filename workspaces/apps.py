from django.apps import AppConfig


class WorkspacesConfig(AppConfig):
    name = "workspaces"
    label = "workspaces"
    verbose_name = "Workspaces"

    def ready(self) -> None:
        from portal.quotas.services.queue import admission_listener_register
        from portal.workloads.reconcile import reconciler_register
        from workspaces.reconcile import WorkspaceReconciler
        from workspaces.services import workspaces_admitted

        # Waiting workspaces start by themselves once an admission pass admits them.
        admission_listener_register(kind="workspace", listener=workspaces_admitted)
        reconciler_register(WorkspaceReconciler())
