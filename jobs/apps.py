from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    label = "jobs"
    verbose_name = "Training jobs"

    def ready(self) -> None:
        from jobs.reconcile import JobReconciler
        from jobs.services import jobs_admitted
        from portal.quotas.services.queue import admission_listener_register
        from portal.workloads.reconcile import reconciler_register

        # Queued jobs go on to start once an admission pass admits them.
        admission_listener_register(kind="job", listener=jobs_admitted)
        reconciler_register(JobReconciler())
