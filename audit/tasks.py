"""The periodic checkpoint (Huey; djhuey finds this module in every installed app)."""

from huey import crontab
from huey.contrib.djhuey import db_periodic_task

from audit.checkpoints import checkpoint_tick


# Every minute, so AUDIT_CHECKPOINT_MINUTES may be any number of minutes (a crontab
# cannot say "every 90 minutes") and failed publications are retried a minute later;
# a tick with nothing due is two small queries.
@db_periodic_task(crontab(minute="*"))  # type: ignore[untyped-decorator]
def audit_checkpoint_periodic() -> str:
    return checkpoint_tick()
