"""Each distinct full_response text is stored once (AuditBody) and events refer to it by
its SHA-256; the chain head gets triggers of its own. Moving existing bodies out has to
update the append-only table, so its triggers are lifted for this migration only (the
one place allowed to change the table) and installed again, with the head's, after it."""

import hashlib

from django.apps.registry import Apps
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

from audit.triggers import triggers_install, triggers_uninstall


def lift(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    triggers_uninstall(schema_editor.connection)


def install(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    triggers_install(schema_editor.connection)


def bodies_out(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    AuditEvent = apps.get_model("audit", "AuditEvent")
    AuditBody = apps.get_model("audit", "AuditBody")
    texts = AuditEvent.objects.exclude(full_response="null").values_list(
        "full_response", flat=True
    )
    for text in texts.distinct().iterator(chunk_size=500):
        digest = hashlib.sha256(text.encode()).hexdigest()
        AuditBody.objects.bulk_create([AuditBody(digest=digest, text=text)], ignore_conflicts=True)
        models.QuerySet.update(
            AuditEvent.objects.filter(full_response=text), body_id=digest
        )


def bodies_in(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    AuditEvent = apps.get_model("audit", "AuditEvent")
    AuditBody = apps.get_model("audit", "AuditBody")
    for body in AuditBody.objects.iterator(chunk_size=500):
        models.QuerySet.update(
            AuditEvent.objects.filter(body_id=body.digest), full_response=body.text
        )


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_auditors_group")]

    operations = [
        migrations.RunPython(lift, install),
        migrations.CreateModel(
            name="AuditBody",
            fields=[
                ("digest", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("text", models.TextField()),
            ],
            options={"verbose_name": "audit body"},
        ),
        migrations.AddField(
            model_name="auditevent",
            name="body",
            field=models.ForeignKey(
                blank=True,
                db_column="full_response_sha256",
                db_constraint=False,
                null=True,
                on_delete=models.deletion.DO_NOTHING,
                related_name="+",
                to="audit.auditbody",
            ),
        ),
        migrations.RunPython(bodies_out, bodies_in),
        migrations.RemoveField(model_name="auditevent", name="full_response"),
        migrations.RunPython(install, lift),
    ]
