"""Access control: API keys with scopes and tenants, rate limits and quotas, the audit log.

The functions here work on a ``Database`` directly, so the daemon, the CLI and the web console share them.
"""

from llmos.auth.audit import AuditRecord, audit, list_audit
from llmos.auth.keys import (KeyInfo, Principal, authenticate, check_tenant, create_key, get_key,
                             has_admin_key, list_keys, revoke)
from llmos.auth.scopes import ADMIN, ALL_SCOPES, INFER, READ, SCOPES, TRAIN, allows, check_scopes

__all__ = ["ADMIN", "ALL_SCOPES", "AuditRecord", "INFER", "KeyInfo", "Principal", "READ", "SCOPES", "TRAIN",
           "allows", "audit", "authenticate", "check_scopes", "check_tenant", "create_key", "get_key",
           "has_admin_key", "list_audit", "list_keys", "revoke"]
