from django.apps import AppConfig


class WhatsappConfig(AppConfig):
    name = "whatsapp"
    verbose_name = "WhatsApp"

    def ready(self) -> None:
        from django.conf import settings

        from multichannel.channels import ChannelContribution, channel_register
        from multichannel.models import Channel, UserMessage
        from whatsapp import worker
        from whatsapp.delivery import whatsapp_deliver
        from whatsapp.services import START, STOP, UNSUPPORTED, identity_label

        channel_register(
            ChannelContribution(
                name="whatsapp",
                channel=Channel.WHATSAPP,
                deliver=whatsapp_deliver,
                commands={STOP: worker.asks_to_stop, START: worker.asks_to_start},
                fixed_replies={
                    UNSUPPORTED: lambda message: settings.WHATSAPP_UNSUPPORTED_REPLY,
                    STOP: worker.stop_reply,
                    START: worker.start_reply,
                    UserMessage.Kind.FEEDBACK: worker.reaction_feedback,
                },
                end_user_label=identity_label,
                fetch_media=worker.media_fetch,
                silenced=worker.silenced,
                working=worker.typing,
            )
        )
