from django.apps import AppConfig


class MultichannelConfig(AppConfig):
    name = "multichannel"
    verbose_name = "Multichannel core"

    def ready(self) -> None:
        from multichannel import checks  # noqa: F401  (registers the system checks)
