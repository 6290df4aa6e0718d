from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "web"
    verbose_name = "Web app"

    def ready(self) -> None:
        from multichannel.channels import (
            ChannelContribution,
            ChannelPrivacy,
            SecretReply,
            channel_register,
        )
        from multichannel.models import Channel
        from web import schema  # noqa: F401  (registers the OpenAPI auth scheme)
        from web.privacy import web_forget, web_retain
        from web.services import (
            LOGIN,
            asks_for_sign_in,
            sign_in_link_expand,
            sign_in_reply,
            sign_in_reply_kept,
        )

        # The page polls for replies, so the web channel has nothing to deliver; it
        # answers LOGIN (sent on WhatsApp) with a one-time link to itself.
        channel_register(
            ChannelContribution(
                name="web",
                channel=Channel.WEBAPP,
                commands={LOGIN: asks_for_sign_in},
                fixed_replies={LOGIN: sign_in_reply},
                secret_replies={
                    LOGIN: SecretReply(expand=sign_in_link_expand, keep=sign_in_reply_kept)
                },
                privacy=ChannelPrivacy(forget=web_forget, retain=web_retain),
            )
        )
