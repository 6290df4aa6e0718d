from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "web"
    verbose_name = "Web app"

    def ready(self) -> None:
        from multichannel.channels import delivery_register, reply_expander_register
        from multichannel.models import UserMessage
        from multichannel.processing import fixed_reply_register
        from web import schema  # noqa: F401  (registers the OpenAPI auth scheme)
        from web.services import sign_in_link_expand, sign_in_reply, web_deliver

        delivery_register("webapp", web_deliver)
        fixed_reply_register(UserMessage.Kind.LOGIN, sign_in_reply)
        reply_expander_register(UserMessage.Kind.LOGIN, sign_in_link_expand)
