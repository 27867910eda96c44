from django.contrib.admin.apps import AdminConfig


class DockyardAdminConfig(AdminConfig):
    """Makes Dockyard's admin site (staff only, audited) the default `admin.site`."""

    default_site = "portal.core.admin_site.DockyardAdminSite"
