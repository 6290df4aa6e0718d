from django.apps import AppConfig


class SandboxConfig(AppConfig):
    name = "multichannel.sandbox"
    label = "sandbox"
    verbose_name = "Sandbox (development stand-ins)"

    def ready(self) -> None:
        from multichannel.http import scheme_adapter_register
        from multichannel.sandbox.transport import InProcessAdapter

        # `sandbox://` URLs (MKA1_BASE_URL, WHATSAPP_GRAPH_URL) are served in process.
        scheme_adapter_register("sandbox", InProcessAdapter)
