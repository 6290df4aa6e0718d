"""GET /audit/checkpoint: the latest signed checkpoint, for auditors."""

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from audit.checkpoints import checkpoint_latest


@require_GET
@never_cache
@staff_member_required
def checkpoint_latest_view(request: HttpRequest) -> HttpResponse:
    # The same right as reading the events in the admin (the Auditors group has it);
    # anyone else is sent to the admin login (anonymous) or refused (403).
    if not request.user.has_perm("audit.view_auditevent"):
        raise PermissionDenied
    checkpoint = checkpoint_latest()
    if checkpoint is None:
        return HttpResponse("no checkpoint yet\n", status=404, content_type="text/plain")
    return HttpResponse(checkpoint.note, content_type="text/plain; charset=utf-8")
