from __future__ import annotations

from django.apps import AppConfig


class QuotasConfig(AppConfig):
    name = "portal.quotas"
    label = "quotas"
    verbose_name = "Quotas and GPUs"
    default_auto_field = "django.db.models.BigAutoField"
