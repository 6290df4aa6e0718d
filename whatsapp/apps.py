from django.apps import AppConfig


class WhatsappConfig(AppConfig):
    name = "whatsapp"
    verbose_name = "WhatsApp"

    def ready(self) -> None:
        from django.conf import settings

        from multichannel.channels import ChannelContribution, channel_register
        from multichannel.models import Channel
        from whatsapp.delivery import whatsapp_deliver
        from whatsapp.services import UNSUPPORTED, identity_label

        channel_register(
            ChannelContribution(
                name="whatsapp",
                channel=Channel.WHATSAPP,
                deliver=whatsapp_deliver,
                fixed_replies={
                    UNSUPPORTED: lambda message: settings.WHATSAPP_UNSUPPORTED_REPLY,
                },
                end_user_label=identity_label,
            )
        )
