from django.apps import AppConfig


class SandboxConfig(AppConfig):
    name = "multichannel.sandbox"
    label = "sandbox"
    verbose_name = "Sandbox (development stand-ins)"
