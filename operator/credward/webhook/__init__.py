"""credward's admission webhook: pods get their credential injected; rotation-unsafe consumption is refused.

The decisions are pure (:mod:`credward.domain.injection`, :mod:`credward.domain.webhook_tls`);
this package is the I/O around them: the HTTPS server, the certificates' Secret, the webhook
configurations and the credential index. See docs/webhook.md.
"""

from credward.webhook.runtime import WebhookRuntime
from credward.webhook.settings import WebhookSettings, WebhookSettingsError

__all__ = ["WebhookRuntime", "WebhookSettings", "WebhookSettingsError"]
