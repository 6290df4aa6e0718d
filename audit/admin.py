"""The auditors' view of the ledger: browse, filter, follow a response or a conversation
across channels, check the evidence, download JSONL. Nobody, superusers included, can
add, change or delete an event here."""

import json
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import FieldError, ValidationError
from django.db import connections
from django.db.models import QuerySet
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from audit.bundle import BundleError, bundle_write
from audit.checkpoints import SigningKeyError, checkpoint_latest, signing_key
from audit.evidence import CONDITIONS, LABELS, cross_channel_pairs
from audit.jsonl import SEED_KEYS, seed_fields_and_line
from audit.models import AuditCheckpoint, AuditCheckpointTimestamp, AuditEvent, AuditPublication
from audit.publishing import checkpoint_health, publication_targets
from audit.toolkit import ReadOnlyAdmin
from audit.tree import TreeUnavailableError


class BadFilterError(ValueError):
    pass


def jsonl_download(events: QuerySet[AuditEvent], filename: str) -> StreamingHttpResponse:
    """The same bytes `export_audit` writes for this selection, streamed."""

    def lines() -> Iterator[bytes]:
        fields, line = seed_fields_and_line(connections[events.db])
        rows = events.order_by("sequence").values_list(*fields)
        for row in rows.iterator(chunk_size=2000):
            yield (line(row) + "\n").encode()

    response = StreamingHttpResponse(lines(), content_type="application/x-ndjson; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _filename() -> str:
    return f"audit-{timezone.now():%Y%m%dT%H%M%SZ}.jsonl"


# The seed's identifying fields, then what an auditor needs to check the event.
LIST_FIELDS = ("sequence", *SEED_KEYS[:6])
DETAIL_FIELDS = (
    *LIST_FIELDS,
    "previous_response_id",
    "api_key_fingerprint",
    "related",
    "context_pretty",
    "full_response_pretty",
    "content_digest",
    "previous_hash",
    "hash",
)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = LIST_FIELDS
    list_filter = ["channel", "action"]
    date_hierarchy = "timestamp"
    search_fields = [
        "=end_user_id",
        "=response_id",
        "=conversation_id",
        "=previous_response_id",
        "=api_key_fingerprint",
        "=hash",
    ]
    ordering = ["-sequence"]
    actions = ["download_selected_jsonl"]
    list_per_page = 100
    show_full_result_count = False  # no COUNT(*) over a large ledger on every page
    fields = DETAIL_FIELDS
    readonly_fields = DETAIL_FIELDS

    class Media:
        css = {"all": ["audit/admin.css"]}

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # Django hides actions from users without change/delete rights; auditors may
        # still download what they can see.
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            del actions["delete_selected"]
        return actions

    @admin.action(description="Download selected events as JSONL", permissions=["view"])
    def download_selected_jsonl(
        self, request: HttpRequest, queryset: QuerySet[AuditEvent]
    ) -> StreamingHttpResponse:
        return jsonl_download(queryset, _filename())

    @admin.display(description="Full response")
    def full_response_pretty(self, event: AuditEvent) -> SafeString:
        try:
            pretty = json.dumps(json.loads(event.full_response), indent=2, ensure_ascii=False)
        except ValueError:
            pretty = event.full_response
        return format_html('<pre class="audit-json">{}</pre>', pretty)

    @admin.display(description="Context")
    def context_pretty(self, event: AuditEvent) -> SafeString:
        return format_html("<pre>{}</pre>", json.dumps(event.context, indent=2, ensure_ascii=False))

    @admin.display(description="Related events")
    def related(self, event: AuditEvent) -> SafeString:
        changelist = reverse("admin:audit_auditevent_changelist")
        links = []
        if event.response_id:
            links.append(
                (f"{changelist}?{urlencode({'response_id': event.response_id})}",
                 f"every event of response {event.response_id}")
            )  # fmt: skip
        if event.conversation_id:
            links.append(
                (f"{changelist}?{urlencode({'conversation_id': event.conversation_id})}",
                 f"every event of conversation {event.conversation_id}")
            )  # fmt: skip
        links.append(
            (f"{changelist}?{urlencode({'end_user_id': event.end_user_id})}",
             f"every event of end user {event.end_user_id}")
        )  # fmt: skip
        if event.response_id:
            evidence = reverse("admin:audit_auditevent_evidence")
            links.append(
                (f"{evidence}?{urlencode({'response_id': event.response_id})}",
                 "cross-channel evidence for this response")
            )  # fmt: skip
        return format_html_join(mark_safe("<br>"), '<a href="{}">{}</a>', links)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("export/", wrap(self.export_view), name="audit_auditevent_export"),
            path("evidence/", wrap(self.evidence_view), name="audit_auditevent_evidence"),
            path("checkpoints/", wrap(self.checkpoints_view), name="audit_auditevent_checkpoints"),
            path("bundle/", wrap(self.bundle_view), name="audit_auditevent_bundle"),
            *super().get_urls(),
        ]

    def export_view(self, request: HttpRequest) -> HttpResponseBase:
        """The current filtered selection of the change list, as JSONL."""
        if not self.has_view_permission(request):
            return HttpResponse(status=403)
        try:
            events = self.filtered_events(request)
        except BadFilterError as exc:
            return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
        return jsonl_download(events, _filename())

    def filtered_events(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        """The change list's current selection (its filters, search and date drill-down).
        Raises BadFilterError for filters that name no field or a value of the wrong
        type (`?sequence=abc`): a bad request, not a server error."""
        try:
            changelist = self.get_changelist_instance(request)
            return changelist.get_queryset(request)
        except (IncorrectLookupParameters, FieldError, ValidationError, ValueError) as exc:
            raise BadFilterError(f"bad filter: {exc}") from exc

    def evidence_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            return HttpResponse(status=403)
        response_id = request.GET.get("response_id") or None
        pairs = list(cross_channel_pairs(response_id=response_id))
        rows = [
            {
                "pair": pair,
                "conditions": [(LABELS[name], pair.checks[name]) for name in CONDITIONS],
            }
            for pair in pairs
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Cross-channel evidence",
            "opts": self.model._meta,
            "rows": rows,
            "response_id": response_id,
            "failed": sum(not pair.passed for pair in pairs),
        }
        return TemplateResponse(request, "admin/audit/auditevent/evidence.html", context)

    def checkpoints_view(self, request: HttpRequest) -> HttpResponse:
        """The latest signed checkpoint and the public key to check it with."""
        if not self.has_view_permission(request):
            return HttpResponse(status=403)
        try:
            key = signing_key()
            public_key = key.verifier.text if key else None
            key_problem = (
                None if key else "AUDIT_SIGNING_KEY is not set: no checkpoints are signed."
            )
        except SigningKeyError as exc:
            public_key, key_problem = None, str(exc)
        recent = list(AuditCheckpoint.objects.order_by("-size")[:20])
        stamped = set(
            AuditCheckpointTimestamp.objects.filter(
                checkpoint_size__in=[c.size for c in recent]
            ).values_list("checkpoint_size", flat=True)
        )
        pending = AuditPublication.objects.filter(
            published_at=None, target__in=publication_targets()
        ).order_by("checkpoint_size")[:20]
        context = {
            **self.admin_site.each_context(request),
            "title": "Signed checkpoints",
            "opts": self.model._meta,
            "latest": checkpoint_latest(),
            "public_key": public_key,
            "key_problem": key_problem,
            "recent": [(c, c.size in stamped) for c in recent],
            "pending": pending,
            "health": checkpoint_health(),
        }
        return TemplateResponse(request, "admin/audit/auditevent/checkpoints.html", context)

    def bundle_view(self, request: HttpRequest) -> HttpResponseBase:
        """The evidence bundle of the current filtered selection of the change list."""
        if not self.has_view_permission(request):
            return HttpResponse(status=403)
        events = self.get_changelist_instance(request).get_queryset(request)
        # A temporary file, not memory: a bundle of the whole ledger is as big as an export.
        spool = tempfile.TemporaryFile()  # noqa: SIM115  (FileResponse closes it)
        try:
            bundle_write(spool, events)
        except (BundleError, SigningKeyError, TreeUnavailableError) as exc:
            spool.close()
            return HttpResponse(
                f"No evidence bundle: {exc}\n", status=409, content_type="text/plain"
            )
        spool.seek(0)
        filename = f"audit-evidence-{timezone.now():%Y%m%dT%H%M%SZ}.zip"
        return FileResponse(
            spool, as_attachment=True, filename=filename, content_type="application/zip"
        )
