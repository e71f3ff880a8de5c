"""The client plane: a :class:`Client` reaches nodes and the controller; a :class:`Job` puts
and gets, routing each key by the job's weight maps.

Rooms: ``client`` (Client, attach, connect), ``job`` (the public Job), ``routes`` (tickets and
weight-map versions), ``batch`` (MULTI-PUT/GET), ``ranges`` (GET_RANGES), ``stripes`` (large
values as chunks), ``streams`` (values larger than memory), ``shared`` (the co-located half:
a node's tier mapped into this process), ``waiting`` (WAIT until keys exist). A client reaches
a node only over the protocol: nothing here imports :mod:`pocketlib.node`.
"""

from .client import Client, Job, ObjectInfo, attach, connect
from .streams import ObjectReader, ObjectWriter

__all__ = ["Client", "Job", "ObjectInfo", "ObjectReader", "ObjectWriter", "attach", "connect"]
