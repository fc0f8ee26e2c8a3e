"""The shared vocabulary of credward's API: group, kinds, labels, and typed models of the CRDs."""

from __future__ import annotations

GROUP = "credward.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

CREDENTIAL_KIND = "ServiceAccountCredential"
CREDENTIAL_PLURAL = "serviceaccountcredentials"
ROLEBINDING_KIND = "RoleBinding"
ROLEBINDING_PLURAL = "rolebindings"

# Labels and annotations credward puts on what it owns.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "credward"
LABEL_CREDENTIAL = f"{GROUP}/credential"
ANNOTATION_SECRET_ID = f"{GROUP}/secret-id"
ANNOTATION_CLIENT_ID = f"{GROUP}/client-id"

# Keys of the Secret a credential owns.
KEY_CLIENT_ID = "client-id"
KEY_CLIENT_SECRET = "client-secret"
KEY_TOKEN_URL = "token-url"
KEY_ISSUER = "issuer"
# During a rotation's grace period only: the secret being replaced, kept so its hash can be pushed again.
KEY_PREVIOUS_CLIENT_SECRET = "previous-client-secret"
SECRET_KEYS = (KEY_CLIENT_ID, KEY_CLIENT_SECRET, KEY_TOKEN_URL, KEY_ISSUER)

# Verbs a service account may hold; GRANT exists so it can be named and refused.
VERB_READ = "read"
VERB_WRITE = "write"
VERB_GRANT = "grant"
SERVICE_ACCOUNT_VERBS = (VERB_READ, VERB_WRITE)
