from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from audit.toolkit import ReadOnlyAdmin
from multichannel.models import Conversation, EndUser, Erasure, LegalHold, Turn, UserMessage
from multichannel.privacy import (
    PrivacyError,
    erasure_request,
    erasure_scope,
    legal_hold_add,
    legal_hold_remove,
)
from multichannel.tasks import erasure_continue_on_commit


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why (a case or ticket reference). It is kept in the audit ledger: "
        "no personal data.",
    )


def _staff_name(request: HttpRequest) -> str:
    return f"{request.user.get_username()} (admin)"


def _with_reason(
    model_admin: admin.ModelAdmin,  # type: ignore[type-arg]
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    action: str,
    title: str,
    explanation: str,
    items: list[str],
    submit: str,
) -> str | TemplateResponse:
    """An admin action's confirmation page asking for a reason; the reason once given."""
    form = ReasonForm(request.POST if request.POST.get("confirmed") else None)
    if form.is_valid():
        reason: str = form.cleaned_data["reason"]
        return reason
    opts = model_admin.model._meta
    return TemplateResponse(
        request,
        "admin/multichannel/reason.html",
        {
            **model_admin.admin_site.each_context(request),
            "opts": opts,
            "title": title,
            "explanation": explanation,
            "items": items,
            "selected": [str(pk) for pk in queryset.values_list("pk", flat=True)],
            "action": action,
            "form": form,
            "submit": submit,
            "back": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
        },
    )


@admin.register(EndUser)
class EndUserAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "erased_at"]
    list_filter = [("erased_at", admin.EmptyFieldListFilter)]
    search_fields = ["id"]
    date_hierarchy = "created_at"
    actions = ["erase", "hold"]

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("multichannel.erase_enduser"))

    def has_hold_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("multichannel.add_legalhold"))

    @admin.action(permissions=["erase"], description="Erase these people's data…")
    def erase(self, request: HttpRequest, queryset: QuerySet[EndUser]) -> HttpResponse | None:
        people = list(queryset)
        reason = _with_reason(
            self,
            request,
            queryset,
            action="erase",
            title="Erase these people's data",
            explanation=(
                "Everything of theirs is deleted at MKA1 and here, and the content of their "
                "audit events is removed (the events, digests and hashes stay). This cannot "
                "be undone. People under a legal hold are refused."
            ),
            items=[
                f"{person.pk}: "
                + ", ".join(
                    f"{count} {name.replace('_', ' ')}"
                    for name, count in erasure_scope(person).items()
                )
                for person in people
            ],
            submit="Erase",
        )
        if not isinstance(reason, str):
            return reason
        for person in people:
            try:
                erasure = erasure_request(
                    end_user=person, reason=reason, requested_by=_staff_name(request)
                )
            except PrivacyError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            erasure_continue_on_commit(erasure.pk)
            self.message_user(request, f"Erasure {erasure.pk} of {person.pk} is under way.")
        return None

    @admin.action(permissions=["hold"], description="Place a legal hold on these people…")
    def hold(self, request: HttpRequest, queryset: QuerySet[EndUser]) -> HttpResponse | None:
        reason = _with_reason(
            self,
            request,
            queryset,
            action="hold",
            title="Place a legal hold",
            explanation="While held, neither an erasure nor retention removes anything of theirs.",
            items=[person.pk for person in queryset],
            submit="Place the hold",
        )
        if not isinstance(reason, str):
            return reason
        for person in queryset:
            try:
                hold = legal_hold_add(end_user=person, reason=reason, by=_staff_name(request))
            except PrivacyError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(request, f"Legal hold {hold.pk} placed on {person.pk}.")
        return None


@admin.register(Erasure)
class ErasureAdmin(ReadOnlyAdmin):
    list_display = ["id", "end_user", "step", "requested_by", "requested_at", "finished_at"]
    list_filter = ["step", ("finished_at", admin.EmptyFieldListFilter)]
    search_fields = ["end_user__id"]
    date_hierarchy = "requested_at"


@admin.register(LegalHold)
class LegalHoldAdmin(ReadOnlyAdmin):
    list_display = ["id", "end_user", "added_by", "added_at", "removed_at"]
    list_filter = [("removed_at", admin.EmptyFieldListFilter)]
    search_fields = ["end_user__id"]
    actions = ["lift"]

    def has_lift_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("multichannel.change_legalhold"))

    @admin.action(permissions=["lift"], description="Lift these legal holds…")
    def lift(self, request: HttpRequest, queryset: QuerySet[LegalHold]) -> HttpResponse | None:
        holds = list(queryset.filter(removed_at__isnull=True).select_related("end_user"))
        reason = _with_reason(
            self,
            request,
            queryset,
            action="lift",
            title="Lift legal holds",
            explanation="An erasure paused by a hold carries on once it is lifted.",
            items=[f"{hold.end_user_id}: {hold.reason}" for hold in holds],
            submit="Lift",
        )
        if not isinstance(reason, str):
            return reason
        for hold in holds:
            try:
                legal_hold_remove(end_user=hold.end_user, reason=reason, by=_staff_name(request))
            except PrivacyError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(request, f"Legal hold {hold.pk} on {hold.end_user_id} lifted.")
        return None


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    list_display = ["mka1_conversation_id", "end_user", "previous_response_id", "updated_at"]
    search_fields = ["mka1_conversation_id", "end_user__id", "previous_response_id"]
    list_select_related = ["end_user"]


@admin.register(Turn)
class TurnAdmin(ReadOnlyAdmin):
    list_display = ["response_id", "channel", "end_user", "previous_response_id", "created_at"]
    list_filter = ["channel"]
    search_fields = ["response_id", "previous_response_id", "end_user__id"]
    date_hierarchy = "created_at"
    list_select_related = ["end_user"]


@admin.register(UserMessage)
class UserMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "channel", "kind", "state", "end_user", "sent_at", "attempts"]
    list_filter = ["channel", "kind", "state"]
    search_fields = ["external_id", "end_user__id", "turn__response_id"]
    date_hierarchy = "sent_at"
    list_select_related = ["end_user"]
