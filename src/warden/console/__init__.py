"""The web console ``warden serve`` shows at ``/``: static pages (HTML, CSS, JavaScript modules)
that call the JSON API with the signed-in API key. No build step, nothing fetched from elsewhere."""

from warden.console.serve import CONTENT_SECURITY_POLICY, SECURITY_HEADERS, STATIC_DIR, mount

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "STATIC_DIR", "mount"]
