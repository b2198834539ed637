from alembic import context

from fleetflow.db import migration
from fleetflow.db import models

context.configure(connection=context.config.attributes['connection'],
                  target_metadata=models.Base.metadata,
                  version_table=migration.VERSION_TABLE,
                  render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
