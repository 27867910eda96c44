from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "portal.accounts"
    label = "accounts"
    verbose_name = "Accounts and teams"

    def ready(self) -> None:
        from portal.accounts import schema, signals  # noqa: F401  (audit receivers, OpenAPI auth scheme)
