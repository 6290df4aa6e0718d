"""Signed checkpoints, the stored Merkle tree (tiles), RFC 3161 time-stamps and the
publication queue. The first three are insert-only: their triggers are installed here
(and only theirs are removed when this migration is reversed)."""

import django.utils.timezone
from django.apps.registry import Apps
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

from audit.triggers import EVIDENCE, triggers_install, triggers_uninstall


def install(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    triggers_install(schema_editor.connection, tables=EVIDENCE)


def uninstall(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    triggers_uninstall(schema_editor.connection, tables=EVIDENCE)


class Migration(migrations.Migration):
    dependencies = [("audit", "0006_media_feedback_optout_actions")]

    operations = [
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("size", models.BigIntegerField(unique=True)),
                ("root_hash", models.CharField(max_length=64)),
                ("last_hash", models.CharField(max_length=64)),
                ("note", models.TextField()),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={"ordering": ["-size"], "get_latest_by": "size"},
        ),
        migrations.CreateModel(
            name="AuditCheckpointTimestamp",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("checkpoint_size", models.BigIntegerField(unique=True)),
                ("token", models.BinaryField()),
                ("tsa_url", models.CharField(max_length=500)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
        ),
        migrations.CreateModel(
            name="AuditPublication",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("checkpoint_size", models.BigIntegerField()),
                ("target", models.CharField(max_length=500)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("published_at", models.DateTimeField(blank=True, null=True)),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("failing_since", models.DateTimeField(blank=True, null=True)),
                ("last_error", models.CharField(blank=True, max_length=300)),
            ],
            options={
                "indexes": [models.Index(fields=["published_at"], name="audit_publication_pending")],
                "constraints": [
                    models.UniqueConstraint(fields=("checkpoint_size", "target"), name="audit_publication_unique")
                ],
            },
        ),
        migrations.CreateModel(
            name="AuditTreeTile",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("level", models.PositiveSmallIntegerField()),
                ("number", models.BigIntegerField()),
                ("width", models.PositiveSmallIntegerField()),
                ("hashes", models.BinaryField()),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("level", "number", "width"), name="audit_tile_unique")
                ],
            },
        ),
        migrations.RunPython(install, uninstall),
    ]
