"""The Auditors group: view-only permissions on the audit, the mappings and the
message tables."""

from django.apps.registry import Apps
from django.contrib.auth.management import create_permissions
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

GROUP = "Auditors"
VIEWABLE = [
    ("audit", "auditevent"),
    ("multichannel", "enduser"),
    ("multichannel", "conversation"),
    ("multichannel", "turn"),
    ("multichannel", "usermessage"),
    ("whatsapp", "whatsappidentity"),
    ("whatsapp", "webhookdelivery"),
    ("whatsapp", "inboundmessage"),
    ("whatsapp", "outboundmessage"),
    ("web", "signinlink"),
]


def create_group(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    # Permissions are normally created after all migrations; make sure they exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    for app_label, model in VIEWABLE:
        group.permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=f"view_{model}")
        )


def remove_group(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_append_only_triggers"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("multichannel", "0001_initial"),
        ("whatsapp", "0001_initial"),
        ("web", "0001_initial"),
    ]
    operations = [migrations.RunPython(create_group, remove_group)]
