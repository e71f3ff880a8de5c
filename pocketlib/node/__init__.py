"""The data plane: a storage node serving one tier driver over TCP.

Rooms, bottom up: ``waits`` (WAIT until keys exist), ``state`` (NodeState: jobs, tokens,
epochs, map versions, draining), ``conn`` (a connection's counters, replies and fences),
``values`` (GET, PUT, streamed puts), ``batches`` (MULTI_PUT, MULTI_GET), ``objects``
(GET_RANGES and COPY), ``shared`` (the co-located half: leases and reservations of the tier's
memory handed to a local client),
``session`` (one client connection: frames in, each request dispatched), ``server``
(StorageNode: the listener and threads), ``agent`` (registration and heartbeats to the
controller).
A node imports its tier and the bottom floor, never the client or the controller.
"""
