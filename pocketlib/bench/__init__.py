"""``pocket bench``: pocketlib next to a real redis-server, and the report of the comparison.

Needs ``redis-server`` on PATH and the ``bench`` extra (``pip install 'pocketlib[bench]'``).
Nothing here is imported by ``import pocketlib``; the submodules are:

- :mod:`.settings`: the command's options (light: no third-party imports);
- :mod:`.redis_peer`: a redis-server child process and the sort's shuffle through it;
- :mod:`.measure`: the measurement loops; :mod:`.report`: the markdown report and targets;
- :mod:`.dataplane`: the whole run.
"""
