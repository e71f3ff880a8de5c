"""``pocket bench``: pocketlib next to a real redis-server, and the report of the comparison.

Needs ``redis-server`` on PATH and the ``bench`` extra (``pip install 'pocketlib[bench]'``).
Nothing here is imported by ``import pocketlib``; the submodules are:

- :mod:`.settings`: the command's options (light: no third-party imports);
- :mod:`.redis_peer`: a redis-server child process and the sort's shuffle through it;
- :mod:`.measure`: the measurement loops; :mod:`.report`: the markdown report and targets
  (:mod:`.report_kit` its pieces, :mod:`.tier_report` part d's section);
- :mod:`.tiers`: part d, the tiers (:mod:`.tier_latency`, :mod:`.tier_restarts`, in the setting
  of :mod:`.tier_env`, into a :class:`~.tier_results.TierResults`);
- :mod:`.dataplane`: the whole run.
"""
