from django.apps import AppConfig


class WorkspacesConfig(AppConfig):
    name = "workspaces"
    label = "workspaces"
    verbose_name = "Workspaces"

    def ready(self) -> None:
        from portal.accounts.services import membership_ended_listener_register
        from portal.quotas.services.queue import admission_listener_register
        from portal.workloads.reconcile import reconciler_register
        from workspaces.reconcile import WorkspaceReconciler
        from workspaces.services import workspaces_admitted, workspaces_membership_ended

        # Waiting workspaces start by themselves once an admission pass admits them.
        admission_listener_register(kind="workspace", listener=workspaces_admitted)
        # Someone removed from a team (or deactivated) loses its workspaces' shares and stops theirs.
        membership_ended_listener_register(kind="workspace", listener=workspaces_membership_ended)
        reconciler_register(WorkspaceReconciler())
