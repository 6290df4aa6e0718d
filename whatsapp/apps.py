from django.apps import AppConfig


class WhatsappConfig(AppConfig):
    name = "whatsapp"
    verbose_name = "WhatsApp"

    def ready(self) -> None:
        from django.conf import settings

        from multichannel.channels import ChannelContribution, ChannelPrivacy, channel_register
        from multichannel.metrics import state_gauges_register
        from multichannel.models import Channel, UserMessage
        from whatsapp import metrics, privacy, tasks, worker
        from whatsapp.delivery import whatsapp_deliver
        from whatsapp.privacy import ERASE, ERASE_CONFIRM
        from whatsapp.services import START, STOP, UNSUPPORTED, identity_label

        channel_register(
            ChannelContribution(
                name="whatsapp",
                channel=Channel.WHATSAPP,
                deliver=whatsapp_deliver,
                commands={
                    STOP: worker.asks_to_stop,
                    START: worker.asks_to_start,
                    ERASE: privacy.asks_to_erase,
                },
                contextual_commands={ERASE_CONFIRM: privacy.confirms_erasure},
                fixed_replies={
                    UNSUPPORTED: lambda message: settings.WHATSAPP_UNSUPPORTED_REPLY,
                    STOP: worker.stop_reply,
                    START: worker.start_reply,
                    UserMessage.Kind.FEEDBACK: worker.reaction_feedback,
                    ERASE: privacy.erase_ask_reply,
                    ERASE_CONFIRM: privacy.erase_confirm_reply,
                },
                privacy=ChannelPrivacy(
                    forget=privacy.whatsapp_forget,
                    notify_erased=privacy.whatsapp_notify_erased,
                    pseudonymise=privacy.whatsapp_pseudonymise,
                    retain=privacy.whatsapp_retain,
                    lookup=privacy.whatsapp_lookup,
                ),
                end_user_label=identity_label,
                fetch_media=worker.media_fetch,
                silenced=worker.silenced,
                working=worker.typing,
                recover=lambda starting: tasks.deliveries_recover(starting=starting),
            )
        )
        state_gauges_register(metrics.waiting_gauges)
