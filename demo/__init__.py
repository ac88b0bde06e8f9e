"""``fedcollab demo``: a whole federation on one machine, and the scenarios behind it.

The demo is product code (typed and linted like the rest): :mod:`fedcollab.demo.run`
starts a coordinator and partner nodes on loopback (``federation.local_federation``),
runs the demo's jobs and checks every audit trail; :mod:`~fedcollab.demo.horizontal`
and :mod:`~fedcollab.demo.vertical` build its partners from the shipped data;
:mod:`~fedcollab.demo.baselines` and :mod:`~fedcollab.demo.vertical_summary` train the
centralized and single-party baselines it compares against (possible only because
the demo holds every partner's file); :mod:`~fedcollab.demo.console_accounts` makes
the web console's accounts. The experiments (``experiments/``, not installed) import
these scenarios; nothing here imports them.

Layer: above ``federation`` (it runs both roles), below ``cli``, which passes its
progress display in as a callback.
"""
