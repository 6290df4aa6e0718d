from django.apps import AppConfig


class WhatsappConfig(AppConfig):
    name = "whatsapp"
    verbose_name = "WhatsApp"

    def ready(self) -> None:
        from multichannel.channels import delivery_register
        from whatsapp.delivery import whatsapp_deliver

        delivery_register("whatsapp", whatsapp_deliver)
