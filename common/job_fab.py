"""The job FAB contract both roles agree on.

``fedcollab job submit`` (:mod:`coordinator.submit`) builds a Flower App Bundle
that names fedcollab's installed components and carries one placeholder module;
a partner's node runtime (:mod:`client.node_runtime`) accepts exactly that FAB and
never imports code from it. The names live here, below both roles, so neither
role imports the other to agree on them.
"""

from __future__ import annotations

__all__ = ["CLIENTAPP_REF", "JOB_FAB_MODULE", "JOB_FAB_MODULE_TEXT", "SERVERAPP_REF"]

#: The components a fedcollab job FAB names.
CLIENTAPP_REF = "fedcollab.client.client_app:app"
SERVERAPP_REF = "fedcollab.coordinator.server_app:app"
#: The one module a job FAB carries: a placeholder, never imported.
JOB_FAB_MODULE = "fedcollab_job.py"
JOB_FAB_MODULE_TEXT = '"""Components live in installed packages."""\n'
