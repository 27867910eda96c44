"""The audit log. Record events with `portal.audit.services.audit_record`."""
