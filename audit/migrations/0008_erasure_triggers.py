"""The append-only triggers of the event table now let exactly one change through:
erasing an event's content (context to {}, body reference to null), never of a
compliance record. Reinstalled, since SQLite keeps a trigger of the same name."""

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

from audit.triggers import triggers_install, triggers_uninstall


def reinstall(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    triggers_uninstall(schema_editor.connection)
    triggers_install(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("audit", "0007_checkpoints_and_tree")]
    operations = [migrations.RunPython(reinstall, reinstall)]
