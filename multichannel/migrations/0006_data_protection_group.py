"""The Data protection group: erases people's data, places and lifts legal holds, and
sees what it needs for that; auditors may see erasures and holds but change nothing."""

from django.apps.registry import Apps
from django.contrib.auth.management import create_permissions
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

GROUP = "Data protection"
AUDITORS = "Auditors"
PERMISSIONS = [
    ("multichannel", "erase_enduser"),
    ("multichannel", "view_enduser"),
    ("multichannel", "view_erasure"),
    ("multichannel", "view_legalhold"),
    ("multichannel", "add_legalhold"),
    ("multichannel", "change_legalhold"),
]
AUDITOR_PERMISSIONS = [("multichannel", "view_erasure"), ("multichannel", "view_legalhold")]


def create_group(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    # Permissions are normally created after all migrations; make sure they exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    def permission(app_label: str, codename: str) -> object:
        return Permission.objects.get(content_type__app_label=app_label, codename=codename)

    group, _ = Group.objects.get_or_create(name=GROUP)
    group.permissions.add(*(permission(*pair) for pair in PERMISSIONS))
    auditors = Group.objects.filter(name=AUDITORS).first()
    if auditors is not None:
        auditors.permissions.add(*(permission(*pair) for pair in AUDITOR_PERMISSIONS))


def remove_group(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("multichannel", "0005_privacy"),
        ("audit", "0003_auditors_group"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_group, remove_group)]
